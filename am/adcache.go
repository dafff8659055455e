package am

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAdCacheTTL is how long ListResources may serve an advertisement
// built earlier when AggregateConfig.AdCacheTTL is zero.
const DefaultAdCacheTTL = time.Second

// adCache keeps the last advertisement built for each value of
// geni_available. Rendering 1,000 nodes is cheap; reading them with their
// usage on every call is not, and it is what made ListResources slow.
//
// An entry is served while all of these hold:
//   - the inventory version (one row, read on every call) is the one it was
//     built from: a node an operator adds, drains or retires with psql is
//     advertised, or not, at the next call;
//   - this process has changed no sliver since it was built (Allocate,
//     Delete and the reaper bump gen): a caller sees its own changes at once;
//   - it is younger than the TTL (by the aggregate's clock): changes of usage
//     made by other aggregate processes on the same database show within
//     the TTL.
//
// So an advertisement may be up to the TTL behind other processes'
// allocations. That is the staleness every advertisement has anyway (the
// world moves between ListResources and Allocate); Allocate decides on
// current data and refuses what no longer fits.
type adCache struct {
	ttl   time.Duration // negative: never serve a built advertisement again
	gen   atomic.Uint64 // bumped after every change of usage by this process
	slots [2]adSlot     // index 1: geni_available
}

type adSlot struct {
	mu      sync.Mutex // held while building, so concurrent misses build once
	valid   bool
	version int64
	gen     uint64
	built   time.Time
	ad      string
}

// changed records that this process changed sliver usage: every
// advertisement built before is out of date.
func (c *adCache) changed() { c.gen.Add(1) }

// get returns the cached advertisement for availableOnly when it is still
// good for version at now, or builds one. build returns the advertisement
// and the inventory version it was built from.
func (c *adCache) get(availableOnly bool, version int64, now func() time.Time, build func() (string, int64, error)) (string, error) {
	slot := &c.slots[0]
	if availableOnly {
		slot = &c.slots[1]
	}
	slot.mu.Lock()
	defer slot.mu.Unlock()
	// Read gen before building: a change that commits while we build makes
	// this entry stale at once rather than hiding behind it.
	gen := c.gen.Load()
	t := now()
	if slot.valid && slot.version == version && slot.gen == gen && c.ttl > 0 && !t.Before(slot.built) && t.Sub(slot.built) < c.ttl {
		return slot.ad, nil
	}
	ad, built, err := build()
	if err != nil {
		return "", err
	}
	slot.valid, slot.version, slot.gen, slot.built, slot.ad = true, built, gen, t, ad
	return ad, nil
}

// advertisement is ListResources after its checks: the inventory as a GENI
// v3 advertisement, from the cache when it is still good.
func (a *Aggregate) advertisement(ctx context.Context, availableOnly bool) (string, error) {
	version, err := a.store.InventoryVersion(ctx)
	if err != nil {
		return "", err
	}
	return a.ads.get(availableOnly, version, a.now, func() (string, int64, error) {
		inv, err := a.store.Inventory(ctx)
		if err != nil {
			return "", 0, err
		}
		ad, err := a.rspecs.Advertisement(inv.Nodes, availableOnly, a.now())
		return ad, inv.Version, err
	})
}
