package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/am/metrics"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
)

// TestReloadRootsIsLoud: a SIGHUP reload that fails says so in the log (an
// error), in the metrics and in its return value, and keeps the old set; one
// that succeeds counts as ok and swaps the set TLS and credentials share.
func TestReloadRootsIsLoud(t *testing.T) {
	ca := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+reload+authority+ca", KeyBits: 1024})
	dir := pkitest.RootsDir(t, t.TempDir(), ca.Cert) // ca.pem
	roots, _, err := credentials.LoadTrustRoots(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := credentials.NewVerifier(roots, credentials.Options{})
	var logs amtest.LogBuffer
	reg := metrics.NewRegistry()
	o := &opsSide{Registry: reg, log: slog.New(slog.NewTextHandler(&logs, nil)),
		rootsReloads: reg.NewCounter("geniam_trusted_roots_reloads_total", "reloads", "result")}
	scrape := func() string {
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}

	if err := os.Remove(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	if err := o.reloadRoots(v, dir, false); err == nil {
		t.Fatal("reloading an empty directory succeeded")
	}
	if v.Roots() != roots {
		t.Error("a failed reload replaced the roots")
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "NOT reloaded") {
		t.Errorf("a failed reload is not an error in the log:\n%s", logs.String())
	}
	if m := scrape(); !strings.Contains(m, `geniam_trusted_roots_reloads_total{result="failed"} 1`) {
		t.Errorf("a failed reload is not counted:\n%s", m)
	}

	if err := os.WriteFile(filepath.Join(dir, "ca.cer"), ca.Cert.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.reloadRoots(v, dir, false); err != nil {
		t.Fatal(err)
	}
	if v.Roots() == roots || len(v.Roots().Certs()) != 1 {
		t.Error("a good reload did not swap the roots")
	}
	if m := scrape(); !strings.Contains(m, `geniam_trusted_roots_reloads_total{result="ok"} 1`) {
		t.Errorf("a good reload is not counted:\n%s", m)
	}
}

// TestReloadPolicy: a SIGHUP puts the configuration's operator policy in
// force at the gate as one set (here a deny list and the operators); a
// configuration that does not load, or whose policy does not parse, is loud
// and leaves the previous policy in force; keys only a restart applies are
// named in a warning.
func TestReloadPolicy(t *testing.T) {
	const alice, bob, carol = "urn:publicid:IDN+ch+user+alice", "urn:publicid:IDN+ch+user+bob", "urn:publicid:IDN+ch+user+carol"
	started, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	started.Operators = carol
	var logs amtest.LogBuffer
	reg := metrics.NewRegistry()
	o := &opsSide{Registry: reg, log: slog.New(slog.NewTextHandler(&logs, nil)), st: &store.Store{},
		policyReloads: reg.NewCounter("geniam_policy_reloads_total", "reloads", "result")}
	p, err := o.policy(started.Operations, o.st)
	if err != nil {
		t.Fatal(err)
	}
	gate := am.NewGate(am.GateConfig{Ops: p, Operators: started.OperatorURNs()})
	refused := func(user string) bool {
		_, err := gate.Check(context.Background(), am.Access{Method: "SSH", Caller: &am.Caller{URN: user}, IdentityOnly: true})
		var e *am.Err
		if err != nil && (!errors.As(err, &e) || e.Code != am.Forbidden) {
			t.Fatalf("%s: %v, want FORBIDDEN or nothing", user, err)
		}
		return err != nil
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	if refused(alice) || !gate.IsOperator(carol) {
		t.Fatal("the started policy is not in force")
	}

	next := *started
	next.Operations.Deny = "urn:publicid:IDN+ch+user+alice"
	next.Operators = bob
	next.Listen = "127.0.0.1:9"
	if err := o.reloadPolicy(func() (*config.Config, error) { c := next; return &c, nil }, started, gate); err != nil {
		t.Fatal(err)
	}
	if !refused(alice) || refused(bob) || !gate.IsOperator(bob) || gate.IsOperator(carol) {
		t.Error("the reloaded deny list and operators are not in force together")
	}
	if !strings.Contains(logs.String(), "only at the next start") || !strings.Contains(logs.String(), "keys=listen") {
		t.Errorf("a changed listen address is not named as needing a restart:\n%s", logs.String())
	}
	if m := scrape(); !strings.Contains(m, `geniam_policy_reloads_total{result="ok"} 1`) {
		t.Errorf("a good reload is not counted:\n%s", m)
	}

	for _, load := range []func() (*config.Config, error){
		func() (*config.Config, error) { c := *started; c.Operations.Deny = "[unclosed"; return &c, nil },
		func() (*config.Config, error) {
			return nil, errors.New("config geniam.yaml: yaml: line 3: did not find expected key")
		},
	} {
		if err := o.reloadPolicy(load, started, gate); err == nil {
			t.Error("a bad configuration reloaded")
		}
	}
	if !refused(alice) || !gate.IsOperator(bob) {
		t.Error("a failed reload changed the policy in force")
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "policy NOT reloaded") {
		t.Errorf("a failed reload is not an error in the log:\n%s", logs.String())
	}
	if m := scrape(); !strings.Contains(m, `geniam_policy_reloads_total{result="failed"} 2`) {
		t.Errorf("failed reloads are not counted:\n%s", m)
	}
}

// TestSIGHUPReloadsPolicy: a SIGHUP to a running aggregate puts the deny
// list its configuration now holds in force on the AM API: alice, served
// before, is refused (FORBIDDEN) after one, and served again after the next
// once the list is empty again.
func TestSIGHUPReloadsPolicy(t *testing.T) {
	var deny atomic.Value
	deny.Store("")
	hooks, started := denyFrom(&deny, seedDemo)
	s := serveWith(t, newDevPKI(t), pgtest.NewDatabase(t), hooks, started)
	reloadsDeny(t, &deny, "a SIGHUP", func() {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}, s)
}

// TestAdminReloadReachesEveryProcess: `geni-am admin reload` reloads every
// aggregate process on the database (two here), with no signal sent.
func TestAdminReloadReachesEveryProcess(t *testing.T) {
	var deny atomic.Value
	deny.Store("")
	pki, db := newDevPKI(t), pgtest.NewDatabase(t)
	hooksA, startedA := denyFrom(&deny, seedDemo)
	a := serveWith(t, pki, db, hooksA, startedA)
	hooksB, startedB := denyFrom(&deny, nil)
	b := serveWith(t, pki, db, hooksB, startedB)
	reloadsDeny(t, &deny, "admin reload", func() {
		var out strings.Builder
		if err := runAdmin(context.Background(), []string{"--db.url", db, "reload"}, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "reload requested") {
			t.Fatalf("admin reload printed %q", out.String())
		}
	}, a, b)
}

// reloadsDeny checks that reload puts a changed deny list in force on every
// aggregate of ss: alice is refused once it names her, and served again
// once it is emptied.
func reloadsDeny(t *testing.T, deny *atomic.Value, how string, reload func(), ss ...*served) {
	t.Helper()
	userCred := ss[0].userCredential()
	for _, s := range ss {
		s.expectCode(userCred, am.Success, "before any reload")
	}
	for _, step := range []struct {
		deny string
		code am.Code
	}{{devenv.UserURN, am.Forbidden}, {"", am.Success}} {
		deny.Store(step.deny)
		reload()
		for i, s := range ss {
			s.expectCode(userCred, step.code, fmt.Sprintf("aggregate %d after %s with deny %q", i+1, how, step.deny))
		}
	}
}

// denyFrom is serve hooks whose reload reads the configuration the
// aggregate started with (which started, serveWith's tune, records) and the
// deny list in deny.
func denyFrom(deny *atomic.Value, afterMigrate func(context.Context, *store.Store) error) (*serveHooks, func(*config.Config)) {
	var cfg *config.Config
	hooks := &serveHooks{afterMigrate: afterMigrate}
	hooks.reread = func() (*config.Config, error) {
		c := *cfg
		c.Operations.Deny = deny.Load().(string)
		return &c, nil
	}
	return hooks, func(c *config.Config) { cfg = c }
}

// expectCode waits (up to 10 s) until ListResources with cred answers code.
func (s *served) expectCode(cred []byte, code am.Code, what string) {
	s.t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := geniCode(s.t, s.call("ListResources", creds(cred), geni3Opts))
		if got == int(code) {
			return
		}
		if time.Now().After(end) {
			s.t.Fatalf("%s: ListResources answers geni_code %d, want %d", what, got, code)
		}
	}
}
