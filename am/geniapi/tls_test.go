package geniapi

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/openssltest"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	kolo "github.com/kolo/xmlrpc"
)

// TestTLSClients runs real mutual-TLS handshakes on 127.0.0.1 with the
// client certificates GENI users present, good and bad.
func TestTLSClients(t *testing.T) {
	openssltest.Need(t)
	p := newTestPKI(t)
	log, logs := newLogger()
	h := NewHandler(&fakeAM{}, HandlerOptions{Logger: log})
	urlLegacy, _ := startServer(t, h, p, true, log)
	urlStrict, _ := startServer(t, h, p, false, log)

	other := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+other+authority+ca"})
	otherUser := other.Issue(devpki.Options{URN: "urn:publicid:IDN+other+user+mallory"})
	pair := func(certPEM, keyPEM []byte) *tls.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	cert := func(c tls.Certificate) *tls.Certificate { return &c }
	bobSAN := "URI:urn:publicid:IDN+example+user+bob,email:bob@example.org"

	// An intermediate authority (gcf style: CA:TRUE, no keyUsage) signed
	// with SHA-1, and a SHA-256 leaf below it.
	interLeaf := openssltest.Leaf{Name: "sha1-inter", Digest: "sha1", Serial: "78", CA: true, SAN: "URI:urn:publicid:IDN+example:sub+authority+sa"}
	interCertPEM, _ := p.signer.Sign(t, interLeaf)
	underInterPEM, underInterKey := p.signer.Child(interLeaf).Sign(t, openssltest.Leaf{Name: "carol", Digest: "sha256", Serial: "5", SAN: "URI:urn:publicid:IDN+example:sub+user+carol"})

	sha1PEM, sha1Key := p.signer.Sign(t, openssltest.Leaf{Name: "bob-sha1", Digest: "sha1", Serial: "1001", SAN: bobSAN})
	negPEM, negKey := p.signer.Sign(t, openssltest.Leaf{Name: "bob-neg", Digest: "sha256", Serial: "-1234", SAN: bobSAN})
	ekuPEM, ekuKey := p.signer.Sign(t, openssltest.Leaf{Name: "bob-eku", Digest: "sha256", Serial: "1002", SAN: bobSAN, Extra: "extendedKeyUsage=serverAuth\n"})
	noURNPEM, noURNKey := p.signer.Sign(t, openssltest.Leaf{Name: "nourn", Digest: "sha256", Serial: "9", SAN: "email:nourn@example.org"})

	cases := []struct {
		name    string
		url     string
		cert    *tls.Certificate
		code    am.Code // when the handshake succeeds
		caller  string  // URN the aggregate must see
		refused bool    // the TLS layer refuses the client
		logHas  string
	}{
		{"trusted", urlLegacy, cert(p.clientCert(t, devpki.Options{URN: aliceURN, Email: "alice@example.org"})), am.Success, aliceURN, false, ""},
		{"trusted strict", urlStrict, cert(p.clientCert(t, devpki.Options{URN: aliceURN})), am.Success, aliceURN, false, ""},
		{"URN with colons in authority", urlLegacy, cert(p.clientCert(t, devpki.Options{URN: "urn:publicid:IDN+emulab.net:proj1:sub+user+bob"})), am.Success, "urn:publicid:IDN+emulab.net:proj1:sub+user+bob", false, ""},
		{"serverAuth-only EKU", urlStrict, pair(ekuPEM, ekuKey), am.Success, "urn:publicid:IDN+example+user+bob", false, ""},
		{"untrusted root", urlLegacy, cert(pkitest.TLS(t, otherUser)), 0, "", true, "unknown authority"},
		{"expired", urlLegacy, cert(p.clientCert(t, devpki.Options{URN: aliceURN, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})), 0, "", true, "expired"},
		{"not yet valid", urlLegacy, cert(p.clientCert(t, devpki.Options{URN: aliceURN, NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})), 0, "", true, "not yet valid"},
		{"no client certificate", urlLegacy, nil, 0, "", true, "client didn't provide a certificate"},
		{"SHA-1 leaf, legacy on", urlLegacy, pair(sha1PEM, sha1Key), am.Success, "urn:publicid:IDN+example+user+bob", false, "legacy path admitted"},
		{"SHA-1 leaf, legacy off", urlStrict, pair(sha1PEM, sha1Key), 0, "", true, "SHA1"},
		{"SHA-1 intermediate, legacy on", urlLegacy, pair(append(underInterPEM, interCertPEM...), underInterKey), am.Success, "urn:publicid:IDN+example:sub+user+carol", false, "legacy path admitted"},
		{"SHA-1 intermediate, legacy off", urlStrict, pair(append(underInterPEM, interCertPEM...), underInterKey), 0, "", true, "SHA1"},
		{"SHA-1 intermediate not sent", urlLegacy, pair(underInterPEM, underInterKey), 0, "", true, "unknown authority"},
		{"negative serial", urlStrict, pair(negPEM, negKey), am.Success, "urn:publicid:IDN+example+user+bob", false, ""},
		{"no URN", urlLegacy, pair(noURNPEM, noURNKey), am.Forbidden, "", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client := &http.Client{Transport: clientTransport(p, c.cert), Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			mark := logs.Len()
			v, err := rawCall(client, c.url, "GetVersion")
			if c.refused {
				if err == nil {
					t.Fatalf("the server accepted the client: %#v", v)
				}
				// Under TLS 1.3 the client may see a reset rather than the
				// alert; the server's log says why it refused.
				waitForLog(t, logs, mark, "TLS handshake error")
				waitForLog(t, logs, mark, c.logHas)
				return
			}
			if err != nil {
				t.Fatalf("call failed: %v\nlog:\n%s", err, logs)
			}
			resp := v.(map[string]any)
			if got := am.Code(codeOf(t, resp)); got != c.code {
				t.Fatalf("code %v, want %v: %#v", got, c.code, resp)
			}
			if c.code == am.Forbidden && !strings.Contains(resp["output"].(string), "no GENI URN") {
				t.Errorf("output %q", resp["output"])
			}
			if c.caller != "" && !strings.Contains(logs.String(), "caller="+c.caller) {
				t.Errorf("caller %s not in the log:\n%s", c.caller, logs)
			}
			if c.logHas != "" {
				waitForLog(t, logs, mark, c.logHas)
			}
		})
	}
}

// waitForLog waits briefly for the server to log s (a refused handshake is
// logged by the server after the client has seen the error).
func waitForLog(t *testing.T, logs *logBuffer, since int, s string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String()[since:], s) {
		if time.Now().After(deadline) {
			t.Errorf("log does not mention %q:\n%s", s, logs.String()[since:])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVerifyLegacyDirect(t *testing.T) {
	openssltest.Need(t)
	p := newTestPKI(t)
	certPEM, _ := p.signer.Sign(t, openssltest.Leaf{Name: "md5", Digest: "md5", Serial: "3", SAN: "URI:urn:publicid:IDN+example+user+old"})
	certs, err := devpki.ParseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := loadRoots(t, p.rootsDir)
	log, logs := newLogger()
	raw := [][]byte{certs[0].Raw}
	if err := verifyClient(raw, roots, true, log, time.Now()); err != nil {
		t.Errorf("MD5 leaf, legacy on: %v", err)
	}
	if !strings.Contains(logs.String(), "MD5-RSA") {
		t.Errorf("legacy admission not logged with the algorithm:\n%s", logs)
	}
	if err := verifyClient(raw, roots, false, log, time.Now()); err == nil {
		t.Error("MD5 leaf admitted with legacy off")
	}
	if err := verifyClient(raw, roots, true, log, time.Now().Add(60*24*time.Hour)); err == nil || !strings.Contains(err.Error(), "not valid at") {
		t.Errorf("expired MD5 leaf: %v", err)
	}
	// A tampered signature fails the legacy check too.
	bad := bytes.Clone(certs[0].Raw)
	bad[len(bad)-5] ^= 0xff
	if err := verifyClient([][]byte{bad}, roots, true, log, time.Now()); err == nil {
		t.Error("tampered MD5 leaf admitted")
	}
	if err := verifyClient(nil, roots, true, log, time.Now()); err == nil {
		t.Error("empty chain admitted")
	}
}

// TestTrustRoots: the TLS edge reads the Verifier's current roots, so a
// reload (SIGHUP) admits a new authority to TLS and to the credential checks
// in one step, and a failed reload leaves both with the old set. The loading
// rule itself is tested in package credentials (TestLoadTrustRoots).
func TestTrustRoots(t *testing.T) {
	p := newTestPKI(t)
	log, _ := newLogger()
	h := NewHandler(&fakeAM{}, HandlerOptions{Logger: log})
	url, live := startServer(t, h, p, false, log)
	other := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+other+authority+ca"})
	cert := pkitest.TLS(t, other.Issue(devpki.Options{URN: "urn:publicid:IDN+other+user+dave"}))
	call := func() error {
		c := &http.Client{Transport: clientTransport(p, &cert)}
		defer c.CloseIdleConnections()
		_, err := rawCall(c, url, "GetVersion")
		return err
	}
	if call() == nil {
		t.Fatal("other authority admitted before reload")
	}
	// A .cer file in DER, in a subdirectory: the credential layer used to
	// skip both, while TLS read the subdirectory.
	if err := os.MkdirAll(filepath.Join(p.rootsDir, "fed"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.rootsDir, "fed", "other.cer"), other.Cert.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := live.ReloadRoots(p.rootsDir, false); err != nil {
		t.Fatal(err)
	}
	if err := call(); err != nil {
		t.Errorf("other authority refused by TLS after reload: %v", err)
	}
	if got := live.Roots().Certs(); len(got) != 2 {
		t.Errorf("the credential layer sees %d roots after reload, want 2", len(got))
	}
	// A reload that fails keeps the set both layers use.
	if _, err := live.ReloadRoots(filepath.Join(p.rootsDir, "missing"), false); err == nil {
		t.Error("reload of a missing directory succeeded")
	}
	if err := call(); err != nil || len(live.Roots().Certs()) != 2 {
		t.Errorf("a failed reload changed the roots: %v, %d roots", err, len(live.Roots().Certs()))
	}
}

// TestKoloEndToEnd drives every method over mutual TLS with kolo/xmlrpc,
// a client that is not ours.
func TestKoloEndToEnd(t *testing.T) {
	p := newTestPKI(t)
	log, logs := newLogger()
	fake := &fakeAM{}
	url, _ := startServer(t, NewHandler(fake, HandlerOptions{Logger: log}), p, true, log)
	alice := p.clientCert(t, devpki.Options{URN: aliceURN, Email: "alice@example.org"})
	client, err := kolo.NewClient(url, clientTransport(p, &alice))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	call := func(method string, args ...any) map[string]any {
		t.Helper()
		var reply map[string]any
		if err := client.Call(method, args, &reply); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return reply
	}
	code := func(r map[string]any) int64 { return r["code"].(map[string]any)["geni_code"].(int64) }

	gv := call("GetVersion")
	if gv["geni_api"] != int64(3) || code(gv) != 0 {
		t.Errorf("GetVersion %#v", gv)
	}
	if v := gv["value"].(map[string]any); v["geni_single_allocation"] != int64(0) || v["geni_api_versions"].(map[string]any)["3"] != "https://127.0.0.1:5001/" {
		t.Errorf("GetVersion value %#v", v)
	}
	if got := fake.last().call.Caller; got == nil || got.URN != aliceURN || got.Email != "alice@example.org" {
		t.Errorf("caller %+v", got)
	}
	gv = call("GetVersion", map[string]any{"whatever": 1})
	if code(gv) != 0 {
		t.Errorf("GetVersion with options %#v", gv)
	}

	opts := map[string]any{"geni_rspec_version": rspecV3, "geni_compressed": true, "geni_available": true}
	lr := call("ListResources", creds, opts)
	if code(lr) != 0 || decompress(t, lr["value"].(string)) != adRSpec || !fake.last().call.Options.Available {
		t.Errorf("ListResources %#v", lr)
	}
	d := call("Describe", []any{sliceURN}, creds, opts)
	if code(d) != 0 || decompress(t, d["value"].(map[string]any)["geni_rspec"].(string)) != manifest {
		t.Errorf("Describe %#v", d)
	}
	a := call("Allocate", sliceURN, creds, "<rspec>\r\n</rspec>", map[string]any{"geni_end_time": "2026-11-22T12:00:00Z"})
	if code(a) != 0 || fake.last().rspec != "<rspec>\r\n</rspec>" || !fake.last().call.Options.EndTime.Equal(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("Allocate %#v, rspec %q", a, fake.last().rspec)
	}
	r := call("Renew", []any{sliver1, sliver2}, creds, "2026-11-23T00:00:00+00:00", map[string]any{"geni_best_effort": true})
	if code(r) != 0 || len(r["value"].([]any)) != 2 || !fake.last().exp.Equal(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Renew %#v", r)
	}
	pr := call("Provision", []any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3,
		"geni_users": []any{map[string]any{"urn": aliceURN, "keys": []any{"ssh-ed25519 AAAA alice"}}}})
	if code(pr) != 0 || len(fake.last().call.Options.Users) != 1 {
		t.Errorf("Provision %#v", pr)
	}
	st := call("Status", []any{sliceURN}, creds, map[string]any{})
	if code(st) != 0 || st["value"].(map[string]any)["geni_urn"] != sliceURN {
		t.Errorf("Status %#v", st)
	}
	poa := call("PerformOperationalAction", []any{sliver1}, creds, "geni_start", map[string]any{})
	if code(poa) != 0 || fake.last().action != "geni_start" {
		t.Errorf("POA %#v", poa)
	}
	del := call("Delete", []any{sliceURN}, creds, map[string]any{})
	if code(del) != 0 {
		t.Errorf("Delete %#v", del)
	}
	sd := call("Shutdown", sliceURN, creds, map[string]any{})
	if code(sd) != 0 || sd["value"] != true {
		t.Errorf("Shutdown %#v", sd)
	}

	// Validation, error structs and the internal-error path over the wire.
	bad := call("ListResources", creds, map[string]any{})
	if code(bad) != int64(am.BadArgs) || !strings.Contains(bad["output"].(string), "geni_rspec_version is required") {
		t.Errorf("missing rspec version %#v", bad)
	}
	bad = call("Describe", []any{"urn:publicid:IDN+am.example+node+n1"}, creds, map[string]any{"geni_rspec_version": rspecV3})
	if code(bad) != int64(am.BadArgs) {
		t.Errorf("node URN %#v", bad)
	}
	bad = call("Renew", []any{sliceURN}, creds)
	if code(bad) != int64(am.BadArgs) || !strings.Contains(bad["output"].(string), "Renew takes 4 arguments") {
		t.Errorf("arity %#v", bad)
	}
	fake.err = am.Errorf(am.SearchFailed, "unknown slice")
	bad = call("Status", []any{sliceURN}, creds, map[string]any{})
	if code(bad) != int64(am.SearchFailed) || !logIDSuffix.MatchString(bad["output"].(string)) {
		t.Errorf("SEARCHFAILED %#v", bad)
	}
	fake.err = errors.New("disk on fire")
	bad = call("Delete", []any{sliceURN}, creds, map[string]any{})
	out, _ := bad["output"].(string)
	if code(bad) != int64(am.ServerError) || !strings.HasPrefix(out, "internal error; log id ") || strings.Contains(out, "disk") {
		t.Errorf("SERVERERROR %#v", bad)
	}
	if id := strings.TrimPrefix(out, "internal error; log id "); !strings.Contains(logs.String(), "log_id="+id) || !strings.Contains(logs.String(), "disk on fire") {
		t.Errorf("cause not logged under %s", id)
	}
	fake.err = nil

	var reply any
	err = client.Call("NoSuchMethod", nil, &reply)
	// net/rpc flattens kolo's FaultError into a string.
	if err == nil || !strings.Contains(err.Error(), "Fault(-32601)") {
		t.Errorf("unknown method: %v", err)
	}
}

// TestKeepAlive checks that calls share one TLS connection.
func TestKeepAlive(t *testing.T) {
	p := newTestPKI(t)
	log, _ := newLogger()
	url, _ := startServer(t, NewHandler(&fakeAM{}, HandlerOptions{Logger: log}), p, true, log)
	alice := p.clientCert(t, devpki.Options{URN: aliceURN})
	client := &http.Client{Transport: clientTransport(p, &alice)}
	defer client.CloseIdleConnections()
	reused := 0
	for i := 0; i < 3; i++ {
		var body bytes.Buffer
		_ = xmlrpc.EncodeCall(&body, "GetVersion")
		req, _ := http.NewRequest(http.MethodPost, url, &body)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if info.Reused {
					reused++
				}
			},
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
			t.Errorf("protocol %s", resp.Proto)
		}
		if _, err := xmlrpc.DecodeResponse(resp.Body, xmlrpc.Limits{}); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if reused != 2 {
		t.Errorf("%d of 3 calls reused the connection, want 2", reused)
	}
}

func benchmarkGetVersion(b *testing.B, keepAlive bool) {
	p := newTestPKI(b)
	log, _ := newLogger()
	url, _ := startServer(b, NewHandler(&fakeAM{}, HandlerOptions{Logger: log}), p, true, log)
	alice := p.clientCert(b, devpki.Options{URN: aliceURN})
	tr := clientTransport(p, &alice)
	tr.DisableKeepAlives = !keepAlive
	client := &http.Client{Transport: tr}
	defer client.CloseIdleConnections()
	var body bytes.Buffer
	_ = xmlrpc.EncodeCall(&body, "GetVersion")
	doc := body.Bytes()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		resp, err := client.Post(url, "text/xml", bytes.NewReader(doc))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := xmlrpc.DecodeResponse(resp.Body, xmlrpc.Limits{}); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

// BenchmarkGetVersionTLS: GetVersion over one kept-alive mutual-TLS connection.
func BenchmarkGetVersionTLS(b *testing.B) { benchmarkGetVersion(b, true) }

// BenchmarkGetVersionTLSNewConn: a full TLS handshake per call.
func BenchmarkGetVersionTLSNewConn(b *testing.B) { benchmarkGetVersion(b, false) }
