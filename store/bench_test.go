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
// by 8 concurrent clients. ns/op is per Allocate+Delete pair.
func BenchmarkAllocateDelete(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			ctx := context.Background()
			st, err := store.Open(ctx, pgtest.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			for i := 0; i < 4; i++ {
				if _, err := st.Pool().Exec(ctx, "INSERT INTO nodes (name, component_urn, capacity) VALUES ($1, $2, 64)",
					fmt.Sprint("node", i), nodeURN(fmt.Sprint("node", i))); err != nil {
					b.Fatal(err)
				}
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
		})
	}
}
