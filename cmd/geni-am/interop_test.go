package main

// Interoperability with omni and the official AM API acceptance tests
// (am_api_accept.py -V 3), kept true without the lab: every request here is
// one that omni or the acceptance tests really sent to geniam, captured on the
// wire (am/geniapi/testdata/captures, README there), replayed byte for byte
// against the whole aggregate as `geni-am serve` wires it: real PostgreSQL,
// real TLS with a client certificate, credentials signed for the test.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/credentials/devch"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	"github.com/geniam/geniam/store/pgtest"
)

// capturesDir holds the captured requests and responses.
var capturesDir = filepath.Join("..", "..", "am", "geniapi", "testdata", "captures")

// servedAggregate is `geni-am serve` running on a loopback port for one test.
type servedAggregate struct {
	url    string
	client *http.Client // presents the experimenter's certificate
}

// aggregateSetup is what differs between the dev-clearinghouse runs and the
// gcf runs: who the aggregate trusts, who calls it, and its clock.
type aggregateSetup struct {
	roots  []*x509.Certificate // the clearinghouse root(s) the aggregate trusts
	caller tls.Certificate     // the experimenter's TLS client certificate
	clock  func() time.Time    // nil: time.Now
}

// serveAggregate starts the aggregate through serve() with a fresh database
// and the dev inventory, and stops it when the test ends.
func serveAggregate(t *testing.T, s aggregateSetup) *servedAggregate {
	t.Helper()
	cfg := serveConfig(t, pgtest.NewDatabase(t))
	// The aggregate's own certificate: any; omni does not check it.
	tlsCA := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+geniam.test+authority+tls", KeyBits: 1024})
	cfg.TLS.Cert, cfg.TLS.Key = tlsCA.Files(tlsCA.Server(devpki.Options{URN: devenv.AMURN, CommonName: "localhost", KeyBits: 1024}), "am")
	cfg.TLS.TrustedRoots = pkitest.RootsDir(t, filepath.Join(cfg.VarDir, "trusted_roots"), s.roots...)
	cfg.Operations.Listen = ""
	a, err := startServe(t, cfg, slog.New(slog.DiscardHandler), &serveHooks{afterMigrate: seedDemo, clock: s.clock})
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // as omni: it never checks the aggregate's certificate
		Certificates:       []tls.Certificate{s.caller},
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &servedAggregate{url: "https://" + a.String() + "/", client: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// post sends one XML-RPC request body as omni does (Python's xmlrpc.client:
// POST, text/xml) and returns the response body.
func (s *servedAggregate) post(t *testing.T, body []byte) []byte {
	t.Helper()
	req, err := http.NewRequest("POST", s.url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", "Python-xmlrpc/3.11")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	return b
}

// devFederation is a dev clearinghouse with one experimenter, alice, as the
// lab's `geni-am dev` has.
type devFederation struct {
	ch    *devch.Clearinghouse
	alice *devpki.Identity
}

func newDevFederation(t *testing.T) *devFederation {
	t.Helper()
	ch, err := devch.New(devenv.Authority)
	if err != nil {
		t.Fatal(err)
	}
	ch.KeyBits = 1024
	alice, err := ch.IssueUser("alice", "alice@"+devenv.Authority)
	if err != nil {
		t.Fatal(err)
	}
	return &devFederation{ch: ch, alice: alice}
}

// replayVars creates the slices a scenario names at the dev clearinghouse and
// returns what its templates need.
func (f *devFederation) replayVars(t *testing.T, slices ...string) *replayVars {
	t.Helper()
	user, err := f.ch.UserCredential(chainOf(f.alice))
	if err != nil {
		t.Fatal(err)
	}
	v := &replayVars{creds: map[string][]byte{"user": user}, sliceURNs: map[string]string{}, base: time.Now()}
	for i, name := range slices {
		s, cred, err := f.ch.CreateSlice(chainOf(f.alice), name, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		v.creds[sliceKey("slice", i)] = cred
		v.sliceURNs[sliceKey("SLICE", i)+"_URN"] = s.URN
	}
	return v
}

// TestReplayAcceptanceCaptures replays what am_api_accept.py -V 3 sent to
// `geni-am dev` (default and --more-strict send the same calls) and
// omni's own calls after a Shutdown.
func TestReplayAcceptanceCaptures(t *testing.T) {
	fed := newDevFederation(t)
	agg := serveAggregate(t, aggregateSetup{roots: []*x509.Certificate{fed.ch.CA.Cert}, caller: pkitest.TLS(t, fed.alice)})
	for _, sc := range []struct {
		dir    string
		slices []string
	}{
		// test_GetVersion, test_ListResources*, including the three bad
		// credentials and the shipped untrusted-usercred.xml.
		{"dev-listresources", nil},
		// test_CreateSliver: Allocate, Provision with geni_users, the five
		// POAs ('' and an unknown action included), Status, Describe (no
		// credentials, a node URN, an unknown sliver), Renew past the slice,
		// Delete, Status/Describe of an empty slice.
		{"dev-createsliver", []string{"replay1", "replay2"}},
		// test_CreateSliver_badrspec_emptyfile and _malformed.
		{"dev-badrspec", []string{"replay3", "replay4"}},
		// am_api_accept_shutdown.py up to and including Shutdown.
		{"dev-shutdown-accept", []string{"replay5"}},
		// omni after Shutdown: every call on the slice is FORBIDDEN.
		{"dev-shutdown-after", []string{"replay6"}},
	} {
		t.Run(sc.dir, func(t *testing.T) {
			replayScenario(t, agg, filepath.Join(capturesDir, sc.dir), fed.replayVars(t, sc.slices...))
		})
	}
}

// The gcf samples (am/geniapi/testdata/captures/gcf-samples, copied from a
// real gcf-ch run) were issued at 20:43 on 2026-11-21; the slice credential
// expired at 21:43.
var gcfSampleNow = time.Date(2026, 11, 21, 21, 0, 0, 0, time.UTC)

// gcfSamples reads the gcf clearinghouse's CA and alice's certificate and key
// from the captures, and returns a reader of the other sample files.
func gcfSamples(t *testing.T) ([]*x509.Certificate, tls.Certificate, func(name string) []byte) {
	t.Helper()
	dir := filepath.Join(capturesDir, "gcf-samples")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ca, err := devpki.ParseCerts(read("ca-ch-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := tls.X509KeyPair(read("alice-cert.pem"), read("alice-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return ca, alice, read
}

// TestReplayOmniCycleWithGcfCredentials replays omni's whole cycle
// (getversion … delete) as it ran against `geni-am serve` trusting a gcf
// clearinghouse, with the credentials that clearinghouse really issued and the
// aggregate's clock set to when they were valid.
func TestReplayOmniCycleWithGcfCredentials(t *testing.T) {
	ca, alice, read := gcfSamples(t)
	agg := serveAggregate(t, aggregateSetup{roots: ca, caller: alice, clock: func() time.Time { return gcfSampleNow }})
	v := &replayVars{
		creds:     map[string][]byte{"user": read("user-cred.xml"), "slice": read("slice-cred.xml")},
		sliceURNs: map[string]string{"SLICE_URN": "urn:publicid:IDN+geni:gpo:gcf+slice+samples"},
		base:      gcfSampleNow,
	}
	replayScenario(t, agg, filepath.Join(capturesDir, "gcf-cycle"), v)
}

// TestGcfCredentialsRefusedOnceExpired: the same slice credential, an hour
// after it expired, is refused with FORBIDDEN (not a fault, not accepted).
func TestGcfCredentialsRefusedOnceExpired(t *testing.T) {
	ca, alice, read := gcfSamples(t)
	late := gcfSampleNow.Add(time.Hour)
	agg := serveAggregate(t, aggregateSetup{roots: ca, caller: alice, clock: func() time.Time { return late }})
	v := &replayVars{
		creds:     map[string][]byte{"user": read("user-cred.xml"), "slice": read("slice-cred.xml")},
		sliceURNs: map[string]string{"SLICE_URN": "urn:publicid:IDN+geni:gpo:gcf+slice+samples"},
		base:      late,
	}
	tmpl, err := os.ReadFile(filepath.Join(capturesDir, "gcf-cycle", "004-Allocate.req.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got := decodeResult(t, agg.post(t, v.render(t, tmpl)))
	if code := geniCode(t, got); code != 3 {
		t.Fatalf("Allocate with an expired slice credential: geni_code %d, want 3 (FORBIDDEN); %v", code, got["output"])
	}
	// The user credential is still valid then: ListResources works.
	tmpl, err = os.ReadFile(filepath.Join(capturesDir, "gcf-cycle", "003-ListResources.req.xml"))
	if err != nil {
		t.Fatal(err)
	}
	got = decodeResult(t, agg.post(t, v.render(t, tmpl)))
	if code := geniCode(t, got); code != 0 {
		t.Fatalf("ListResources with the valid user credential: geni_code %d; %v", code, got["output"])
	}
}

// TestAlteredObjectRefusedEvenWithValidSignature: alterSignedObject only
// breaks the signature by accident of xml.etree's re-serialization; the
// <foo/> it inserts sits outside the signed credential. The same insertion
// into an otherwise untouched credential must be refused too.
func TestAlteredObjectRefusedEvenWithValidSignature(t *testing.T) {
	fed := newDevFederation(t)
	agg := serveAggregate(t, aggregateSetup{roots: []*x509.Certificate{fed.ch.CA.Cert}, caller: pkitest.TLS(t, fed.alice)})
	v := fed.replayVars(t)
	tmpl, err := os.ReadFile(filepath.Join(capturesDir, "dev-listresources", "002-ListResources.req.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if code := geniCode(t, decodeResult(t, agg.post(t, v.render(t, tmpl)))); code != 0 {
		t.Fatalf("the untouched credential: geni_code %d", code)
	}
	cred := string(v.creds["user"])
	i := strings.Index(cred, "<credential ")
	v.creds["user"] = []byte(cred[:i] + "<foo/>" + cred[i:])
	got := decodeResult(t, agg.post(t, v.render(t, tmpl)))
	if code := geniCode(t, got); code != 3 {
		t.Fatalf("<foo/> beside the signed credential: geni_code %d, want 3 (FORBIDDEN); %v", code, got["output"])
	}
}
