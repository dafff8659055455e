package am

import (
	"context"
	"log/slog"
	"time"
)

// Reaper deletes slivers whose expiry has passed (allocations not provisioned
// in time, provisioned slivers at the end of their lease). Several aggregate
// processes may run one each on the same database: the Store skips rows
// another reaper holds, so each expiry happens once.
type Reaper struct {
	Store       Store
	Interval    time.Duration    // between sweeps; default 10 s
	Batch       int              // slivers per transaction; default 100
	Clock       func() time.Time // default time.Now
	Provisioner Provisioner      // told of expired slivers, when set
	Log         *slog.Logger     // default slog.Default()

	changed func() // told when slivers expired (the aggregate's advertisement cache)
}

// NewReaper returns the reaper of the aggregate's store and provisioner.
func (a *Aggregate) NewReaper(interval time.Duration) *Reaper {
	return &Reaper{Store: a.store, Interval: interval, Clock: a.now, Provisioner: a.cfg.Provisioner, changed: a.ads.changed}
}

// Sweep expires everything due now and returns how many slivers it removed.
func (r *Reaper) Sweep(ctx context.Context) (int, error) {
	batch := r.Batch
	if batch <= 0 {
		batch = 100
	}
	clock := r.Clock
	if clock == nil {
		clock = time.Now
	}
	total := 0
	for {
		expired, err := r.Store.Expire(ctx, clock(), batch)
		if err != nil {
			return total, err
		}
		total += len(expired)
		if len(expired) > 0 {
			if r.changed != nil {
				r.changed()
			}
			r.logger().Info("reaper: slivers expired", "count", len(expired), "first", expired[0].URN)
			if r.Provisioner != nil {
				r.Provisioner.Deleted(ctx, expired)
			}
		}
		if len(expired) < batch {
			return total, nil
		}
	}
}

// Run sweeps every Interval until ctx ends, and sooner when the Store can
// say when the next sliver expires (NextExpirer): a booking's window ends
// within a second or so, not up to an Interval late, so the next booking of
// its node does not start beside it. Errors are logged, not fatal: the next
// sweep tries again.
func (r *Reaper) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	clock := r.Clock
	if clock == nil {
		clock = time.Now
	}
	floor := min(interval, time.Second) // at most one sweep a second for expiries
	for {
		if _, err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.logger().Warn("reaper: sweep failed", "err", err)
		}
		wait := interval
		if ne, ok := r.Store.(NextExpirer); ok {
			if next, err := ne.NextExpiry(ctx); err == nil && !next.IsZero() {
				wait = min(wait, max(next.Sub(clock()), floor))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// NextExpirer is implemented by a Store that can say when the next sliver
// the reaper would delete expires (zero: none).
type NextExpirer interface {
	NextExpiry(ctx context.Context) (time.Time, error)
}

func (r *Reaper) logger() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}
