package am

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inventoryStore is a Store with only the inventory: it counts full reads.
type inventoryStore struct {
	Store   // nil: the tests below call nothing else
	version atomic.Int64
	reads   atomic.Int64
	used    atomic.Int64 // usage of node1, which moves without a version bump
}

func (s *inventoryStore) InventoryVersion(context.Context) (int64, error) {
	return s.version.Load(), nil
}

func (s *inventoryStore) Inventory(context.Context) (*Inventory, error) {
	s.reads.Add(1)
	time.Sleep(5 * time.Millisecond) // long enough for concurrent callers to meet
	n := Node{Name: "node1", ComponentID: "urn:publicid:IDN+t+node+node1", SliverTypes: []string{SliverTypeContainer},
		Capacity: 4, Used: int(s.used.Load()), Available: true}
	return &Inventory{Version: s.version.Load(), Nodes: []Node{n}}, nil
}

type allowEveryone struct{}

func (allowEveryone) Authorize(req AuthRequest) (*Authorization, error) {
	return &Authorization{User: req.Caller.URN, Expires: req.Now.Add(time.Hour)}, nil
}

// usageAd renders only what the tests look at: each node's usage.
type usageAd struct{ RSpecs }

func (usageAd) Advertisement(nodes []Node, availableOnly bool, now time.Time) (string, error) {
	s := fmt.Sprintf("available-only=%t", availableOnly)
	for _, n := range nodes {
		s += fmt.Sprintf(" %s:%d", n.Name, n.Used)
	}
	return s, nil
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestAdvertisementCache(t *testing.T) {
	st := &inventoryStore{}
	st.version.Store(1)
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	agg := NewAggregate(AggregateConfig{URN: "urn:publicid:IDN+t+authority+am"}, st, allowEveryone{}, usageAd{}, clk.now)
	ctx := context.Background()
	geni3 := Options{RSpecVersion: &RSpecVersion{Type: "GENI", Version: "3"}}
	call := Call{Caller: &Caller{URN: "urn:publicid:IDN+t+user+alice"}, Options: geni3}
	list := func(want string, wantReads int64) {
		t.Helper()
		ad, err := agg.ListResources(ctx, call)
		if err != nil {
			t.Fatal(err)
		}
		if ad != want {
			t.Errorf("ad %q, want %q", ad, want)
		}
		if n := st.reads.Load(); n != wantReads {
			t.Errorf("%d inventory reads, want %d", n, wantReads)
		}
	}
	list("available-only=false node1:0", 1)
	list("available-only=false node1:0", 1) // a hit: no inventory read
	// Another process allocates (usage moves, the version does not): the
	// ad may lag until the TTL has passed, not longer.
	st.used.Store(1)
	clk.add(DefaultAdCacheTTL / 2)
	list("available-only=false node1:0", 1)
	clk.add(DefaultAdCacheTTL / 2)
	list("available-only=false node1:1", 2)
	// An operator edits nodes: the version moves and the next call sees it.
	st.used.Store(2)
	st.version.Add(1)
	list("available-only=false node1:2", 3)
	// This process changes usage: the next call sees it.
	st.used.Store(3)
	agg.ads.changed()
	list("available-only=false node1:3", 4)
	// geni_available has its own entry.
	call.Options.Available = true
	list("available-only=true node1:3", 5)
	list("available-only=true node1:3", 5)
	call.Options.Available = false
	list("available-only=false node1:3", 5)
	// A clock that jumps back does not make an entry live forever.
	clk.add(-time.Hour)
	list("available-only=false node1:3", 6)

	// Concurrent callers after a change wait for one build.
	agg.ads.changed()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := agg.ListResources(ctx, call); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := st.reads.Load(); n != 7 {
		t.Errorf("8 concurrent calls after a change read the inventory %d times, want once", n-6)
	}

	// A negative TTL turns the cache off.
	off := NewAggregate(AggregateConfig{URN: "urn:publicid:IDN+t+authority+am", AdCacheTTL: -1}, st, allowEveryone{}, usageAd{}, clk.now)
	before := st.reads.Load()
	for i := 0; i < 3; i++ {
		if _, err := off.ListResources(ctx, call); err != nil {
			t.Fatal(err)
		}
	}
	if n := st.reads.Load() - before; n != 3 {
		t.Errorf("uncached aggregate read the inventory %d times for 3 calls", n)
	}
}
