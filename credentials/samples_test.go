package credentials

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials/devpki"
)

// The gcf-issued samples (omni-samples): a user credential and a slice
// credential for alice, signed by the gcf SA, whose self-signed certificate is
// the root.
const (
	sampleAlice = "urn:publicid:IDN+geni:gpo:gcf+user+alice"
	sampleSlice = "urn:publicid:IDN+geni:gpo:gcf+slice+samples"
)

var sampleNow = time.Date(2026, 11, 21, 21, 0, 0, 0, time.UTC)

func sampleVerifier(t testing.TB) *Verifier {
	t.Helper()
	if _, _, err := LoadTrustRoots(t.TempDir()); err == nil {
		t.Fatal("an empty directory gave roots")
	}
	dir := filepath.Dir(writeTemp(t, "ca.pem", readTestdata(t, "ca-ch-cert.pem")))
	roots, problems, err := LoadTrustRoots(dir)
	if err != nil || len(problems) > 0 {
		t.Fatal(err, problems)
	}
	return NewVerifier(roots, Options{})
}

func sampleCaller(t testing.TB) *am.Caller {
	t.Helper()
	certs, err := devpki.ParseCerts([]byte(readTestdata(t, "alice-cert.pem")))
	if err != nil {
		t.Fatal(err)
	}
	return &am.Caller{URN: URNOf(certs[0]), Cert: certs[0], Chain: certs}
}

func sfa(value string) am.Credential {
	return am.Credential{Type: "geni_sfa", Version: "3", Value: value}
}

func TestGCFSamples(t *testing.T) {
	v := sampleVerifier(t)
	caller := sampleCaller(t)
	user, slice := readTestdata(t, "user-cred.xml"), readTestdata(t, "slice-cred.xml")

	for _, method := range []string{"Allocate", "Provision", "PerformOperationalAction", "Renew", "Status", "Describe", "Delete", "Shutdown"} {
		auth, err := v.Authorize(am.AuthRequest{Method: method, Caller: caller, Target: sampleSlice,
			Privileges: PrivilegesFor(method), Now: sampleNow,
			Credentials: []am.Credential{sfa(user), sfa(slice)}})
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if auth.User != sampleAlice || auth.Tool != "" || auth.Issuer != "urn:publicid:IDN+geni:gpo:gcf+authority+sa" ||
			!auth.Expires.Equal(time.Date(2026, 11, 21, 21, 43, 1, 0, time.UTC)) || len(auth.Digest) != 64 {
			t.Fatalf("%s: %+v", method, auth)
		}
	}
	// ListResources with the user credential alone.
	auth, err := v.Authorize(am.AuthRequest{Method: "ListResources", Caller: caller, Now: sampleNow,
		Credentials: []am.Credential{sfa(user)}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(auth.Privileges, ","), "resolve") {
		t.Fatalf("user credential privileges %v", auth.Privileges)
	}
	// The user credential does not act on the slice.
	_, err = v.Authorize(am.AuthRequest{Method: "Allocate", Caller: caller, Target: sampleSlice,
		Privileges: PrivilegesFor("Allocate"), Now: sampleNow, Credentials: []am.Credential{sfa(user)}})
	wantRefusal(t, err, "a user credential cannot act on a slice")
	// After the slice credential's expiry.
	_, err = v.Authorize(am.AuthRequest{Method: "Allocate", Caller: caller, Target: sampleSlice,
		Privileges: PrivilegesFor("Allocate"), Now: sampleNow.Add(time.Hour), Credentials: []am.Credential{sfa(slice)}})
	wantRefusal(t, err, "credential expired at 2026-11-21T21:43:01Z")
}

func wantRefusal(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("authorized; want a refusal containing %q", want)
	}
	if am.CodeOf(err) != am.Forbidden {
		t.Fatalf("code %v, want FORBIDDEN (%v)", am.CodeOf(err), err)
	}
	if msg := am.MessageOf(err); !strings.Contains(msg, want) {
		t.Fatalf("refusal %q, want it to contain %q", msg, want)
	}
}
