package am

import (
	"testing"
	"time"
)

func TestPolicy(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := AggregateConfig{}.withDefaults()
	day := 24 * time.Hour
	cases := []struct {
		name string
		got  time.Time
		want time.Time
	}{
		{"allocation: the hold", c.allocationExpiry(now, now.Add(day), time.Time{}), now.Add(10 * time.Minute)},
		{"allocation: geni_end_time sooner", c.allocationExpiry(now, now.Add(day), now.Add(time.Minute)), now.Add(time.Minute)},
		{"allocation: credential sooner", c.allocationExpiry(now, now.Add(2*time.Minute), time.Time{}), now.Add(2 * time.Minute)},
		{"provision: lifetime", c.provisionExpiry(now, now.Add(30*day), time.Time{}), now.Add(7 * day)},
		{"provision: credential", c.provisionExpiry(now, now.Add(day), time.Time{}), now.Add(day)},
		{"provision: end", c.provisionExpiry(now, now.Add(30*day), now.Add(3*day)), now.Add(3 * day)},
		{"provision: no credential expiry known", c.provisionExpiry(now, time.Time{}, time.Time{}), now.Add(7 * day)},
	}
	for _, tc := range cases {
		if !tc.got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if l, why := c.renewLimit(Allocated, now, now.Add(day)); !l.Equal(now.Add(2*time.Hour)) || why == "" {
		t.Errorf("renew allocated: %v %q", l, why)
	}
	if l, _ := c.renewLimit(Provisioned, now, now.Add(60*day)); !l.Equal(now.Add(30 * day)) {
		t.Errorf("renew provisioned: %v", l)
	}
	if l, why := c.renewLimit(Provisioned, now, now.Add(day)); !l.Equal(now.Add(day)) || why != "the expiry of the slice credential" {
		t.Errorf("renew capped by credential: %v %q", l, why)
	}
}
