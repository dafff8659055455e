package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
)

// BenchmarkAllocateDelete: one Allocate of an unbound container sliver and
// the Delete of its slice, through am.Aggregate on real PostgreSQL, by 1 and
// by 8 concurrent clients on 4 nodes of 64 slots. ns/op is per
// Allocate+Delete pair.
func BenchmarkAllocateDelete(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchAllocateDelete(b, 4, 64, clients)
		})
	}
}

// BenchmarkAllocateDeleteLargeInventory is BenchmarkAllocateDelete on the
// inventory of make bench: 1,000 nodes of 8 slots, by 1, 8 and 32 clients.
// Allocations must scale with clients, not serialize on the node table.
func BenchmarkAllocateDeleteLargeInventory(b *testing.B) {
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchAllocateDelete(b, 1000, 8, clients)
		})
	}
}

func benchAllocateDelete(b *testing.B, nodes, capacity, clients int) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Pool().Exec(ctx, `INSERT INTO nodes (name, component_urn, capacity)
		SELECT 'node' || i, $1 || i, $2 FROM generate_series(0, $3 - 1) AS i`, nodeURN("node"), capacity, nodes); err != nil {
		b.Fatal(err)
	}
	agg := am.NewAggregate(am.AggregateConfig{URN: amURN}, st, &allowAll{now: time.Now}, fakeRSpecs{}, time.Now)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + clients - 1) / clients
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slice := sliceURN(fmt.Sprint("bench", c))
			call := am.Call{Caller: &am.Caller{URN: alice}}
			for i := 0; i < per; i++ {
				if _, err := agg.Allocate(ctx, call, slice, request(container(fmt.Sprint("n", i), ""))); err != nil {
					b.Error(err)
					return
				}
				if _, err := agg.Delete(ctx, call, []string{slice}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
