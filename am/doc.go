// Package am is the domain of geniam, a GENI Aggregate Manager: what a slice,
// a sliver, a node and their states are, and the rules of the AM API v3 as Go
// methods. It imports nothing outside the standard library; every other
// package of the module imports it for its types, and it imports none of them
// (am/layering_test.go holds docs/architecture.md's package table to that).
//
// Where things are:
//
//   - the ten AM API v3 operations: API, implemented by Aggregate
//     (aggregate.go) over a Store, an Authorizer and RSpecs;
//   - who may do what, at every entry point (AM API, /data, console, logs,
//     SSH): Gate (gate.go), with the operator's OpsPolicy (policy_ops.go);
//   - URNs: URN and ParseURN (urn.go), the only URN parser;
//   - errors: *Err carries a geni_code (Code, codes.go), a caller-safe
//     message and a cause for the log only (errors.go);
//   - placement and the "can take a sliver" rule: Node.CanTake, PlaceShuffled
//     (placement.go);
//   - which job an operational action enqueues: ActionJobs (jobs.go), the
//     table the database's trigger is held to;
//   - expiry: Reaper (reaper.go); lifecycle durations: AggregateConfig and
//     policy.go; the advertisement cache: adcache.go; the audit record:
//     AuditRecord (audit.go).
//
// The outside world is behind interfaces defined here and implemented
// elsewhere: Store (package store, PostgreSQL), Authorizer (package
// credentials), RSpecs (package rspec), Provisioner (package am/provision),
// Auditor (cmd/geni-am). Package am/amtest has in-memory fakes of them for
// tests that need no PostgreSQL.
package am
