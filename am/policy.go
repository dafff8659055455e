package am

import (
	"cmp"
	"time"
)

// The time policy of the aggregate: how long slivers live in each state and
// how far Renew may push them. Every limit is also capped by the expiry of the
// credential that authorized the call (spec §10 rule 1).

// Defaults of the AggregateConfig durations.
const (
	DefaultAllocationHold      = 10 * time.Minute    // an allocation not provisioned in time is reaped
	DefaultAllocationMax       = 2 * time.Hour       // how far Renew may extend an allocation
	DefaultProvisionedLifetime = 7 * 24 * time.Hour  // expiry given at Provision
	DefaultMaxLease            = 30 * 24 * time.Hour // how far Renew may extend a provisioned sliver
)

func (c AggregateConfig) withDefaults() AggregateConfig {
	DefaultIfUnset(&c.AllocationHold, DefaultAllocationHold)
	DefaultIfUnset(&c.AllocationMax, DefaultAllocationMax)
	DefaultIfUnset(&c.ProvisionedLifetime, DefaultProvisionedLifetime)
	DefaultIfUnset(&c.MaxLease, DefaultMaxLease)
	DefaultIfUnset(&c.MaxBooking, DefaultMaxBooking)
	DefaultIfUnset(&c.MaxBookAhead, DefaultMaxBookAhead)
	if c.Placement == "" {
		c.Placement = Spread
	}
	if c.AdCacheTTL == 0 { // negative: no cache
		c.AdCacheTTL = DefaultAdCacheTTL
	}
	return c
}

// DefaultIfUnset sets *v to def when it is the zero value or below it (a
// negative limit or duration): how the configuration structs of the
// aggregate and its parts fill in what the operator left out.
func DefaultIfUnset[T cmp.Ordered](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}

// allocationExpiry: the hold, or earlier if the credential or geni_end_time
// (zero: not given) say so.
func (c AggregateConfig) allocationExpiry(now, credExpires, endWanted time.Time) time.Time {
	return earliest(now.Add(c.AllocationHold), credExpires, endWanted)
}

// provisionExpiry: the provisioned lifetime, capped by the maximum lease, the
// credential and the requested end (zero: not given).
func (c AggregateConfig) provisionExpiry(now, credExpires, end time.Time) time.Time {
	return earliest(now.Add(c.ProvisionedLifetime), now.Add(c.MaxLease), credExpires, end)
}

// renewLimit is the latest expiry Renew may grant a sliver in state, and
// what sets it (for the OUTOFRANGE message).
func (c AggregateConfig) renewLimit(state AllocationState, now, credExpires time.Time) (time.Time, string) {
	limit, why := now.Add(c.MaxLease), "the maximum lease of a provisioned sliver"
	if state == Allocated {
		limit, why = now.Add(c.AllocationMax), "the maximum hold of an allocated sliver"
	}
	if !credExpires.IsZero() && credExpires.Before(limit) {
		limit, why = credExpires, "the expiry of the slice credential"
	}
	return limit.UTC(), why
}

// earliest returns the earliest non-zero time.
func earliest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if !t.IsZero() && (out.IsZero() || t.Before(out)) {
			out = t
		}
	}
	return out.UTC()
}
