package devch

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
)

func chain(id *devpki.Identity) []*x509.Certificate {
	return append([]*x509.Certificate{id.Cert}, id.Chain...)
}

// newTestCH is a clearinghouse for authority that keeps nothing on disk.
func newTestCH(tb testing.TB, authority string) *Clearinghouse {
	tb.Helper()
	ch, err := New(authority)
	if err != nil {
		tb.Fatal(err)
	}
	return ch
}

// issueUser issues ch's certificate for the user name.
func issueUser(tb testing.TB, ch *Clearinghouse, name, email string) *devpki.Identity {
	tb.Helper()
	id, err := ch.IssueUser(name, email)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func authorize(t *testing.T, v *credentials.Verifier, user *devpki.Identity, method, target string, cred []byte) error {
	t.Helper()
	_, err := v.Authorize(am.AuthRequest{Method: method, Target: target, Privileges: credentials.PrivilegesFor(method),
		Caller:      &am.Caller{URN: credentials.URNOf(user.Cert), Cert: user.Cert, Chain: chain(user)},
		Credentials: []am.Credential{{Type: "geni_sfa", Version: "3", Value: string(cred)}}})
	return err
}

func TestClearinghouse(t *testing.T) {
	dir := t.TempDir()
	ch, err := Open(dir, "ch.geniam.test")
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := issueUser(t, ch, "alice", "alice@example.org"), issueUser(t, ch, "bob", "bob@example.org")
	v := credentials.NewVerifier(ch.Roots(), credentials.Options{})

	uc, err := ch.UserCredential(chain(alice))
	if err != nil {
		t.Fatal(err)
	}
	if err := authorize(t, v, alice, "ListResources", "", uc); err != nil {
		t.Fatal(err)
	}

	s, cred, err := ch.CreateSlice(chain(alice), "exp1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if s.URN != "urn:publicid:IDN+ch.geniam.test+slice+exp1" {
		t.Fatalf("slice URN %s", s.URN)
	}
	if err := authorize(t, v, alice, "Allocate", s.URN, cred); err != nil {
		t.Fatal(err)
	}
	if err := authorize(t, v, bob, "Allocate", s.URN, cred); am.CodeOf(err) != am.Forbidden {
		t.Fatalf("bob with alice's credential: %v", err)
	}
	if _, _, err := ch.CreateSlice(chain(bob), "EXP1", time.Time{}); am.CodeOf(err) != am.AlreadyExists {
		t.Fatalf("second exp1: %v", err)
	}
	// The owner asking again gets a credential for the same slice.
	if s2, cred2, err := ch.CreateSlice(chain(alice), "exp1", time.Time{}); err != nil || s2.URN != s.URN || authorize(t, v, alice, "Describe", s.URN, cred2) != nil {
		t.Fatalf("CreateSlice again: %v", err)
	}
	if got := ch.SlicesOf(credentials.URNOf(alice.Cert)); len(got) != 1 || got[0] != s.URN {
		t.Fatalf("alice's slices %v", got)
	}
	if _, _, err := ch.CreateSlice(chain(bob), "-bad", time.Time{}); am.CodeOf(err) != am.BadArgs {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := ch.SliceCredential(chain(bob), s.URN); am.CodeOf(err) != am.Forbidden {
		t.Fatalf("bob asks for alice's slice credential: %v", err)
	}

	later := time.Now().Add(20 * 24 * time.Hour).Truncate(time.Second)
	renewed, err := ch.RenewSlice(chain(alice), s.URN, later)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := v.Authorize(am.AuthRequest{Method: "Renew", Target: s.URN, Privileges: credentials.PrivilegesFor("Renew"),
		Caller:      &am.Caller{URN: credentials.URNOf(alice.Cert), Cert: alice.Cert, Chain: chain(alice)},
		Credentials: []am.Credential{{Type: "geni_sfa", Version: "3", Value: string(renewed)}}})
	if err != nil {
		t.Fatal(err)
	}
	if !auth.Expires.Equal(later) {
		t.Fatalf("renewed credential expires %v, want %v", auth.Expires, later)
	}
	if _, err := ch.RenewSlice(chain(alice), s.URN, time.Now().Add(-time.Hour)); am.CodeOf(err) != am.BadArgs {
		t.Fatalf("renew into the past: %v", err)
	}
	if _, err := ch.RenewSlice(chain(alice), s.URN, time.Now().Add(365*24*time.Hour)); am.CodeOf(err) != am.OutOfRange {
		t.Fatalf("renew too far: %v", err)
	}

	// A stranger's certificate is refused.
	eve := issueUser(t, newTestCH(t, "other.test"), "eve", "")
	if _, err := ch.UserCredential(chain(eve)); am.CodeOf(err) != am.Forbidden {
		t.Fatalf("stranger: %v", err)
	}

	// State survives a restart.
	again, err := Open(dir, "ch.geniam.test")
	if err != nil {
		t.Fatal(err)
	}
	if s2 := again.Slice(s.URN); s2 == nil || !s2.Expires.Equal(later) || s2.Owner != credentials.URNOf(alice.Cert) {
		t.Fatalf("reloaded slice %+v", s2)
	}
	cred2, err := again.SliceCredential(chain(alice), s.URN)
	if err != nil {
		t.Fatal(err)
	}
	if err := authorize(t, v, alice, "Delete", s.URN, cred2); err != nil {
		t.Fatal(err)
	}
	if err := again.DeleteSlice(chain(bob), s.URN); am.CodeOf(err) != am.Forbidden {
		t.Fatalf("bob deletes alice's slice: %v", err)
	}
	if err := again.DeleteSlice(chain(alice), s.URN); err != nil {
		t.Fatal(err)
	}
	if again.Slice(s.URN) != nil {
		t.Fatal("deleted slice still there")
	}
}
