package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"github.com/geniam/geniam/am/geniclient"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario names, as --scenarios takes them.
const (
	scGetVersion         = "getversion"
	scGetVersionNewConn  = "getversion-newconn"
	scListResources      = "listresources"
	scListResourcesZ     = "listresources-compressed"
	scAllocateDelete     = "allocate-delete"
	scGetVersionPairs    = "getversion-pairs"
	scProvision          = "provision"
	scDescribeStatus     = "describe-status"
	rowDescribe          = "describe"
	rowStatus            = "status"
	rowAllocate          = "allocate"
	rowDelete            = "delete"
	rowAllocateDelete    = "allocate+delete"
	rowGetVersionPair    = "getversion+getversion"
	rowProvisionStatus   = "provision-status"
	rowProvisionReady    = "provision-to-ready"
	stateReady           = "geni_ready"
	stateFailed          = "geni_failed"
	actionStart          = "geni_start"
	maxProvisionPollings = 100_000 // a bound on Status calls per cycle, whatever the timeout
)

var allScenarios = []string{scGetVersion, scGetVersionNewConn, scListResources, scListResourcesZ, scGetVersionPairs, scAllocateDelete, scProvision, scDescribeStatus}

// bench runs the scenarios against one aggregate.
type bench struct {
	cfg     config
	tls     *tls.Config
	creds   *credentials
	request string // Allocate's request RSpec
	log     io.Writer
}

func (b *bench) logf(format string, args ...any) { fmt.Fprintf(b.log, format+"\n", args...) }

// budget stops a scenario at --count iterations or --duration, whichever
// comes first (or when ctx ends). The duration counts from begin, after the
// clients have connected.
type budget struct {
	ctx      context.Context
	left     atomic.Int64
	duration time.Duration
	deadline time.Time
}

func newBudget(ctx context.Context, count int, d time.Duration) *budget {
	bg := &budget{ctx: ctx, duration: d}
	bg.left.Store(int64(count))
	return bg
}

// begin starts the clock; it must be called before any take.
func (bg *budget) begin() { bg.deadline = time.Now().Add(bg.duration) }

func (bg *budget) take() bool {
	if bg.ctx.Err() != nil || time.Now().After(bg.deadline) {
		return false
	}
	return bg.left.Add(-1) >= 0
}

// run starts n clients, each with its own HTTP client, and returns the wall
// time until the last one finished and the TLS handshakes they made. With
// keep-alive, each client first opens its connection with an untimed
// GetVersion, so the figures are those of the steady state rather than of 32
// simultaneous handshakes. Calls in flight at the deadline are allowed to
// finish (with their own timeout).
func (b *bench) run(ctx context.Context, n int, keepAlive bool, bg *budget, body func(worker int, c *rpcClient)) (time.Duration, int64) {
	var handshakes atomic.Int64
	var ready, done sync.WaitGroup
	startSignal := make(chan struct{})
	for w := range n {
		c := newRPCClient(b.cfg.URL, b.tls, keepAlive, b.cfg.Timeout, &handshakes)
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			defer c.close()
			if keepAlive {
				_, _ = c.call(ctx, "GetVersion", map[string]any{}) // a failure shows in the timed calls
			}
			ready.Done()
			<-startSignal
			body(w, c)
		}()
	}
	ready.Wait()
	start := time.Now()
	if bg != nil {
		bg.begin()
	}
	close(startSignal)
	done.Wait()
	return time.Since(start), handshakes.Load()
}

var rspecVersionOption = map[string]any{"type": "GENI", "version": "3"}

// getVersion times GetVersion, the cheapest AM API call (no credential, no
// database), with n clients and callsPer calls to a timed iteration:
// getversion and getversion-newconn time single calls of one client;
// getversion-pairs times pairs with as many clients as allocate-delete, the
// floor under it: no pair of calls from this client goes faster on this
// machine, so its share of pgbench tps/2 bounds what allocate+delete can reach.
func (b *bench) getVersion(ctx context.Context, row string, n, callsPer int, keepAlive bool) []result {
	rec := newRecorder()
	bg := newBudget(ctx, b.cfg.Count, b.cfg.Duration)
	elapsed, hs := b.run(ctx, n, keepAlive, bg, func(_ int, c *rpcClient) {
		getVersion, err := geniclient.Prepare("GetVersion", map[string]any{})
		if err != nil {
			rec.add(0, err)
			return
		}
		for bg.take() {
			t := time.Now()
			var err error
			for i := 0; i < callsPer && err == nil; i++ {
				var v any
				if v, err = c.sendAM(ctx, getVersion); err == nil {
					if _, ok := v.(map[string]any); !ok {
						err = &callError{Method: "GetVersion", Kind: kindBadValue, Msg: "value is " + geniclient.TypeName(v)}
					}
				}
			}
			rec.add(time.Since(t), err)
		}
	})
	res := rec.result(row, n, elapsed)
	res.Handshakes = hs
	return []result{res}
}

func (b *bench) listResources(ctx context.Context, compressed bool) []result {
	name := scListResources
	if compressed {
		name = scListResourcesZ
	}
	if b.creds.User == "" {
		return []result{{Scenario: name, Clients: 1, Skipped: "no user credential (give --user-cred or --ch)"}}
	}
	creds := credArg(b.creds.User)
	opts := map[string]any{"geni_rspec_version": rspecVersionOption, "geni_available": false, "geni_compressed": compressed}
	rec := newRecorder()
	bg := newBudget(ctx, b.cfg.Count, b.cfg.Duration)
	elapsed, hs := b.run(ctx, 1, true, bg, func(_ int, c *rpcClient) {
		for bg.take() {
			t := time.Now()
			v, err := c.callAM(ctx, "ListResources", creds, opts)
			if err == nil {
				err = checkAdvertisement(v, compressed)
			}
			rec.add(time.Since(t), err)
		}
	})
	res := rec.result(name, 1, elapsed)
	res.Handshakes = hs
	return []result{res}
}

// checkAdvertisement checks that ListResources's value is an RSpec, after
// base64 and zlib when compressed.
func checkAdvertisement(v any, compressed bool) error {
	bad := func(msg string) error { return &callError{Method: "ListResources", Kind: kindBadValue, Msg: msg} }
	s, ok := v.(string)
	if !ok {
		return bad("value is " + geniclient.TypeName(v))
	}
	if compressed {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return bad("geni_compressed value is not base64: " + err.Error())
		}
		z, err := zlib.NewReader(bytes.NewReader(raw))
		if err != nil {
			return bad("geni_compressed value is not zlib: " + err.Error())
		}
		plain, err := io.ReadAll(io.LimitReader(z, maxResponseBytes))
		if err != nil {
			return bad("geni_compressed value does not inflate: " + err.Error())
		}
		s = string(plain)
	}
	if !strings.Contains(s, "<rspec") {
		return bad("value is not an RSpec")
	}
	return nil
}

// allocateDelete runs Allocate+Delete pairs with n clients, each in its own
// slice. Three rows: the Allocate calls, the Delete calls and the pairs.
func (b *bench) allocateDelete(ctx context.Context, n int) []result {
	rows := []string{rowAllocate, rowDelete, rowAllocateDelete}
	if len(b.creds.Slices) == 0 {
		return skipped(rows, n, "no slice credential (give --slice-cred or --ch)")
	}
	note := ""
	if n > len(b.creds.Slices) {
		note = fmt.Sprintf("asked for %d clients, but there are only %d slice credentials", n, len(b.creds.Slices))
		n = len(b.creds.Slices)
	}
	alloc, del, pair := newRecorder(), newRecorder(), newRecorder()
	bg := newBudget(ctx, b.cfg.Count, b.cfg.Duration)
	elapsed, hs := b.run(ctx, n, true, bg, func(w int, c *rpcClient) {
		s := b.creds.Slices[w]
		creds := credArg(s.Cred)
		allocate, err := geniclient.Prepare("Allocate", s.URN, creds, b.request, map[string]any{})
		if err != nil {
			alloc.add(0, err)
			return
		}
		deleteCall, err := geniclient.Prepare("Delete", []string{s.URN}, creds, map[string]any{})
		if err != nil {
			del.add(0, err)
			return
		}
		for bg.take() {
			t := time.Now()
			_, aerr := c.sendAM(ctx, allocate)
			ad := time.Since(t)
			alloc.add(ad, aerr)
			if aerr != nil {
				// The pair failed; clear whatever a half-done Allocate left
				// without counting it.
				_, _ = c.sendAM(ctx, deleteCall)
				pair.add(ad, aerr)
				continue
			}
			t = time.Now()
			_, derr := c.sendAM(ctx, deleteCall)
			dd := time.Since(t)
			del.add(dd, derr)
			pair.add(ad+dd, derr)
		}
	})
	out := []result{alloc.result(rowAllocate, n, elapsed), del.result(rowDelete, n, elapsed), pair.result(rowAllocateDelete, n, elapsed)}
	for i := range out {
		out[i].Handshakes = hs
		out[i].Note = note
	}
	return out
}

// cleanSlices deletes whatever an earlier, interrupted run left in the
// slices; errors (nothing to delete) are expected and ignored.
func (b *bench) cleanSlices(ctx context.Context, n int) {
	n = min(n, len(b.creds.Slices))
	b.run(ctx, n, true, nil, func(w int, c *rpcClient) {
		s := b.creds.Slices[w]
		_, _ = c.callAM(ctx, "Delete", []string{s.URN}, credArg(s.Cred), map[string]any{})
	})
}

func skipped(rows []string, clients int, why string) []result {
	out := make([]result, len(rows))
	for i, r := range rows {
		out[i] = result{Scenario: r, Clients: clients, Skipped: why}
	}
	return out
}

// provision runs cycles of Allocate (N slivers), Provision, geni_start when
// every sliver waits in geni_notready, Status until every sliver is
// geni_ready or geni_failed, and Delete. Rows: the Provision calls, the
// Status polls and the time from the start of Provision to all ready.
func (b *bench) provision(ctx context.Context) []result {
	rows := []string{scProvision, rowProvisionStatus, rowProvisionReady}
	request, s, creds, c, skip := b.oneSlice(b.cfg.ProvisionSlivers)
	if skip != "" {
		return skipped(rows, 1, skip)
	}
	defer c.close()
	prov, status, ready := newRecorder(), newRecorder(), newRecorder()
	bg := newBudget(ctx, b.cfg.ProvisionCycles, b.cfg.Duration)
	bg.begin()
	start := time.Now()
	for cycle := 0; skip == "" && (cycle == 0 || bg.take()); cycle++ {
		if cycle == 0 {
			bg.left.Add(-1) // the first cycle always runs
		}
		skip = b.provisionCycle(ctx, c, s.URN, creds, request, cycle, prov, status, ready)
		if _, err := c.callAM(ctx, "Delete", []string{s.URN}, creds, map[string]any{}); err != nil {
			prov.addError(err)
		}
	}
	elapsed := time.Since(start)
	if skip != "" && len(ready.latencies) == 0 {
		return skipped(rows, 1, skip)
	}
	out := []result{prov.result(scProvision, 1, elapsed), status.result(rowProvisionStatus, 1, elapsed), ready.result(rowProvisionReady, 1, elapsed)}
	for i := range out {
		out[i].Handshakes = c.handshakes.Load()
		out[i].Note = fmt.Sprintf("%d sliver(s) per slice", b.cfg.ProvisionSlivers)
		if skip != "" {
			out[i].Note += "; stopped: " + skip
		}
	}
	return out
}

// provisionCycle runs one cycle and returns why the scenario cannot go on
// ("" to continue).
func (b *bench) provisionCycle(ctx context.Context, c *rpcClient, slice string, creds []map[string]any, request string,
	cycle int, prov, status, ready *recorder) string {
	if _, err := c.callAM(ctx, "Allocate", slice, creds, request, map[string]any{}); err != nil {
		prov.addError(err)
		return "the aggregate cannot allocate: " + err.Error()
	}
	t0 := time.Now()
	v, err := c.callAM(ctx, "Provision", []string{slice}, creds, map[string]any{"geni_rspec_version": rspecVersionOption})
	prov.add(time.Since(t0), err)
	if err != nil {
		return "the aggregate cannot provision: " + err.Error()
	}
	states, err := sliverStates("Provision", v)
	if err != nil {
		prov.addError(err)
		return err.Error()
	}
	started, leftNotReady := !b.cfg.Start, false
	for polls := 0; ; polls++ {
		if done, failed := allSettled(states); done {
			d := time.Since(t0)
			if failed > 0 {
				ready.add(d, &callError{Method: "Status", Kind: kindBadValue, Msg: fmt.Sprintf("%d sliver(s) geni_failed", failed)})
			} else {
				ready.add(d, nil)
			}
			b.logf("provision cycle %d: %d sliver(s) settled in %s (%d failed)", cycle+1, len(states), d.Round(time.Millisecond), failed)
			return ""
		}
		if anyLeft(states, "geni_notready", "geni_pending_allocation", "geni_configuring") {
			leftNotReady = true
		}
		if !started && allIn(states, "geni_notready") {
			_, err := c.callAM(ctx, "PerformOperationalAction", []string{slice}, creds, actionStart, map[string]any{})
			if err != nil {
				status.addError(err) // e.g. BUSY while still configuring: tried again next poll
			} else {
				started = true
			}
		}
		if time.Since(t0) > b.cfg.ReadyTimeout || polls >= maxProvisionPollings || ctx.Err() != nil {
			if !leftNotReady {
				return fmt.Sprintf("slivers never left geni_notready within %s (does the aggregate have node agents?)", b.cfg.ReadyTimeout)
			}
			ready.addError(&callError{Method: "Status", Kind: kindBadValue, Msg: "timeout"})
			return fmt.Sprintf("slivers not ready within %s: %s", b.cfg.ReadyTimeout, describeStates(states))
		}
		select {
		case <-ctx.Done():
		case <-time.After(b.cfg.PollInterval):
		}
		t := time.Now()
		v, err := c.callAM(ctx, "Status", []string{slice}, creds, map[string]any{})
		status.add(time.Since(t), err)
		if err == nil {
			if st, serr := sliverStates("Status", v); serr == nil {
				states = st
			} else {
				status.addError(serr)
			}
		}
	}
}

// sliverStates reads geni_slivers of a Provision or Status value: sliver
// URN → geni_operational_status.
func sliverStates(method string, v any) (map[string]string, error) {
	bad := func(msg string) error { return &callError{Method: method, Kind: kindBadValue, Msg: msg} }
	m, ok := v.(map[string]any)
	if !ok {
		return nil, bad("value is " + geniclient.TypeName(v))
	}
	list, ok := m["geni_slivers"].([]any)
	if !ok {
		return nil, bad("value has no geni_slivers array")
	}
	out := make(map[string]string, len(list))
	for i, x := range list {
		s, ok := x.(map[string]any)
		if !ok {
			return nil, bad(fmt.Sprintf("geni_slivers[%d] is %s", i, geniclient.TypeName(x)))
		}
		urn, _ := s["geni_sliver_urn"].(string)
		if urn == "" {
			return nil, bad(fmt.Sprintf("geni_slivers[%d] has no geni_sliver_urn", i))
		}
		op, _ := s["geni_operational_status"].(string)
		out[urn] = op
	}
	return out, nil
}

// allSettled reports whether every sliver (there must be one) is geni_ready
// or geni_failed, and how many failed.
func allSettled(states map[string]string) (bool, int) {
	if len(states) == 0 {
		return false, 0
	}
	failed := 0
	for _, s := range states {
		switch s {
		case stateReady:
		case stateFailed:
			failed++
		default:
			return false, 0
		}
	}
	return true, failed
}

func allIn(states map[string]string, state string) bool {
	for _, s := range states {
		if s != state {
			return false
		}
	}
	return len(states) > 0
}

// anyLeft reports whether some sliver is in a state other than the waiting ones.
func anyLeft(states map[string]string, waiting ...string) bool {
	for _, s := range states {
		found := false
		for _, w := range waiting {
			found = found || s == w
		}
		if !found {
			return true
		}
	}
	return false
}

func describeStates(states map[string]string) string {
	count := map[string]int{}
	for _, s := range states {
		count[s]++
	}
	var parts []string
	for s, n := range count {
		parts = append(parts, fmt.Sprintf("%d %s", n, s))
	}
	return strings.Join(parts, ", ")
}

// describeStatus allocates one slice of --describe-slivers slivers, then
// calls Describe and Status on it in turn with one client; finally it deletes
// the slice. Rows: the Describe calls and the Status calls.
func (b *bench) describeStatus(ctx context.Context) []result {
	rows := []string{rowDescribe, rowStatus}
	request, s, creds, c, skip := b.oneSlice(b.cfg.DescribeSlivers)
	if skip != "" {
		return skipped(rows, 1, skip)
	}
	defer c.close()
	_, _ = c.callAM(ctx, "Delete", []string{s.URN}, creds, map[string]any{}) // what an interrupted run left
	if _, err := c.callAM(ctx, "Allocate", s.URN, creds, request, map[string]any{}); err != nil {
		return skipped(rows, 1, "the aggregate cannot allocate the slice: "+err.Error())
	}
	defer func() {
		_, _ = c.callAM(context.WithoutCancel(ctx), "Delete", []string{s.URN}, creds, map[string]any{})
	}()
	describe, status := newRecorder(), newRecorder()
	bg := newBudget(ctx, b.cfg.Count, b.cfg.Duration)
	bg.begin()
	start := time.Now()
	for bg.take() {
		t := time.Now()
		v, err := c.callAM(ctx, "Describe", []string{s.URN}, creds, map[string]any{"geni_rspec_version": rspecVersionOption})
		if err == nil {
			err = checkSlivers("Describe", v, b.cfg.DescribeSlivers)
		}
		describe.add(time.Since(t), err)
		t = time.Now()
		v, err = c.callAM(ctx, "Status", []string{s.URN}, creds, map[string]any{})
		if err == nil {
			err = checkSlivers("Status", v, b.cfg.DescribeSlivers)
		}
		status.add(time.Since(t), err)
	}
	elapsed := time.Since(start)
	out := []result{describe.result(rowDescribe, 1, elapsed), status.result(rowStatus, 1, elapsed)}
	for i := range out {
		out[i].Handshakes = c.handshakes.Load()
		out[i].Note = fmt.Sprintf("a slice of %d slivers", b.cfg.DescribeSlivers)
	}
	return out
}

// checkSlivers checks that a Describe or Status value lists n slivers.
func checkSlivers(method string, v any, n int) error {
	states, err := sliverStates(method, v)
	if err != nil {
		return err
	}
	if len(states) != n {
		return &callError{Method: method, Kind: kindBadValue, Msg: fmt.Sprintf("%d slivers, want %d", len(states), n)}
	}
	return nil
}

// oneSlice is the set-up of a one-client scenario on the first slice: the
// request with its nodes copied up to n, the slice, its credential argument
// and a keep-alive client (the caller closes it); or why the scenario is
// skipped.
func (b *bench) oneSlice(n int) (string, sliceCred, []map[string]any, *rpcClient, string) {
	if len(b.creds.Slices) == 0 {
		return "", sliceCred{}, nil, nil, "no slice credential (give --slice-cred or --ch)"
	}
	request, err := replicateNodes(b.request, n)
	if err != nil {
		return "", sliceCred{}, nil, nil, err.Error()
	}
	s := b.creds.Slices[0]
	return request, s, credArg(s.Cred), newRPCClient(b.cfg.URL, b.tls, true, b.cfg.Timeout, nil), ""
}
