package am

import (
	"fmt"
	"time"
)

// Advance reservations (issue 19): Allocate with geni_start_time in the
// future books whole nodes (exclusive slivers) for the window [start, end).
// The booking is the sliver itself, geni_allocated until it is provisioned,
// with Sliver.Starts set and Expires at the end of the window. The database
// holds each slot of a node for a time window and refuses overlapping windows
// (migrations/0010_reservations.sql), so no two processes can double-book;
// the Go side only plans around the bookings it knows of (Node.Bookings) so
// that refusals name the booking in the way.
//
// Provision is accepted at any time before the end: the sliver becomes
// geni_provisioned at once (its expiry stays the end of the window) and its
// provision job waits for the start. The reaper deletes it at the end like
// any expired sliver, which archives /data and tears the container down.

// Defaults of the reservation policy.
const (
	DefaultMaxBooking   = 24 * time.Hour      // longest window of one reservation
	DefaultMaxBookAhead = 30 * 24 * time.Hour // how far ahead a reservation may start
)

// reservationWindow checks the window asked for by geni_start_time (start,
// in the future) and geni_end_time (zero: the start plus the shorter of
// MaxBooking and ProvisionedLifetime) against the policy and the credential.
func (c AggregateConfig) reservationWindow(now, start, end, credExpires time.Time) (time.Time, time.Time, error) {
	start = start.UTC()
	if start.Sub(now) > c.MaxBookAhead {
		return start, end, Errorf(OutOfRange, "geni_start_time %s is too far ahead: reservations may start at most %s from now (until %s)",
			rfc3339(start), c.MaxBookAhead, rfc3339(now.Add(c.MaxBookAhead)))
	}
	if end.IsZero() {
		end = start.Add(min(c.MaxBooking, c.ProvisionedLifetime))
		if !credExpires.IsZero() && credExpires.Before(end) && credExpires.After(start) {
			end = credExpires
		}
	}
	end = end.UTC()
	if !end.After(start) {
		return start, end, Errorf(BadArgs, "geni_end_time %s is not after geni_start_time %s", rfc3339(end), rfc3339(start))
	}
	if end.Sub(start) > c.MaxBooking {
		return start, end, Errorf(OutOfRange, "the window %s to %s is %s long; the longest reservation here is %s",
			rfc3339(start), rfc3339(end), end.Sub(start), c.MaxBooking)
	}
	if !credExpires.IsZero() && credExpires.Before(end) {
		return start, end, Errorf(Expired, "the slice credential expires at %s, before the end of the window %s: renew the slice first",
			rfc3339(credExpires), rfc3339(end))
	}
	return start, end, nil
}

// forWindow is the node list as an allocation for [start, end) sees it (Plan
// must see a node it cannot have as unavailable, saying why). reservation:
// the window starts in the future, so the slivers holding a node now matter
// only if they last into it; otherwise the window starts now and only
// bookings overlapping it matter. limit (0: none) is MaxBookedPerNode for
// user and project. nodes is not changed; a copy is made only when a node
// is.
func forWindow(nodes []Node, start, end time.Time, reservation bool, user, project string, limit time.Duration) []Node {
	out := nodes
	copied := false
	for i := range nodes {
		n := &nodes[i] // a Node is large, and an immediate allocation looks at every one
		why := ""
		for _, b := range n.Bookings {
			if b.Overlaps(start, end) {
				why = fmt.Sprintf("booked from %s to %s (see its geniam:booked calendar in ListResources)", rfc3339(b.Start), rfc3339(b.End))
				break
			}
		}
		if why == "" && reservation && n.Used > 0 && (n.BusyUntil.IsZero() || n.BusyUntil.After(start)) {
			why = fmt.Sprintf("in use until %s, after the start of the window", rfc3339(n.BusyUntil))
		}
		if why == "" && reservation && limit > 0 {
			booked := end.Sub(start)
			for _, b := range n.Bookings {
				if b.User == user || (project != "" && ProjectOf(b.SliceURN) == project) {
					booked += b.End.Sub(b.Start)
				}
			}
			if booked > limit {
				why = fmt.Sprintf("your (or your project's) reservations of it would reach %s, over the limit of %s per node", booked, limit)
			}
		}
		if why == "" && !reservation {
			continue
		}
		if !copied {
			out = append([]Node(nil), nodes...)
			copied = true
		}
		if why != "" {
			out[i].Available, out[i].Reason = false, why
			continue
		}
		// Free at the start of the window.
		out[i].Used, out[i].Exclusive = 0, false
	}
	return out
}
