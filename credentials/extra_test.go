package credentials

import (
	"crypto"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials/devpki"
)

// ProtoGENI writes gids as bare base64 without BEGIN/END lines.
func TestBareBase64GID(t *testing.T) {
	p := getPKI(t)
	bare := base64.StdEncoding.EncodeToString(p.alice.Cert.Raw)
	pemText := string(p.alice.CertPEM())
	cred := credXML("ref0", p.alice, p.slice, testExpires, allSlice, "")
	cred = strings.Replace(cred, "<owner_gid>"+pemText+"</owner_gid>", "<owner_gid>\n"+bare+"\n</owner_gid>", 1)
	if !strings.Contains(cred, bare) {
		t.Fatal("replacement failed")
	}
	doc := signedDoc(t, cred, nil, "ref0", sha1Template("ref0"), "sa")
	v := p.verifier()
	if _, err := authorize(v, p, caller(p.alice), "Allocate", urn("slice", "s1"), doc); err != nil {
		t.Fatal(err)
	}
}

func TestVersionsAndTypes(t *testing.T) {
	p := getPKI(t)
	cred, err := IssueSliceCredential(signer(p.sa, crypto.SHA1), certs(p.alice), certs(p.slice), testExpires)
	if err != nil {
		t.Fatal(err)
	}
	v := p.verifier()
	for _, c := range []am.Credential{
		{Type: "GENI_SFA", Version: "2", Value: string(cred)},
		{Type: "geni_sfa", Version: "3", Value: string(cred)},
	} {
		_, err := v.Authorize(am.AuthRequest{Method: "Allocate", Caller: caller(p.alice), Target: urn("slice", "s1"),
			Privileges: PrivilegesFor("Allocate"), Now: testNow, Credentials: []am.Credential{c}})
		if err != nil {
			t.Fatalf("%s %s: %v", c.Type, c.Version, err)
		}
	}
	_, err = v.Authorize(am.AuthRequest{Method: "Allocate", Caller: caller(p.alice), Target: urn("slice", "s1"),
		Privileges: PrivilegesFor("Allocate"), Now: testNow,
		Credentials: []am.Credential{{Type: "geni_sfa", Version: "1", Value: string(cred)}}})
	wantRefusal(t, err, "geni_sfa version 1 not supported")
}

func TestExpiredCertificate(t *testing.T) {
	p := getPKI(t)
	old, err := p.ca.Issue(devpki.Options{URN: urn("user", "old"), NotBefore: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := IssueSliceCredential(signer(p.sa, crypto.SHA256), certs(old), certs(p.slice), testExpires)
	if err != nil {
		t.Fatal(err)
	}
	_, err = authorize(p.verifier(), p, caller(old), "Allocate", urn("slice", "s1"), string(cred))
	wantRefusal(t, err, "certificate "+urn("user", "old")+" expired at "+formatTime(testNow.Add(-time.Hour)))
}

func TestDelegateRefusesBadDelegations(t *testing.T) {
	p := getPKI(t)
	cred, err := IssueSliceCredential(signer(p.sa, crypto.SHA256), certs(p.alice), certs(p.slice), testExpires)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Delegate(cred, signer(p.bob, crypto.SHA256), certs(p.carol), []Privilege{{"info", false}}, testExpires); err == nil {
		t.Fatal("bob delegated alice's credential")
	}
	if _, err := Delegate(cred, signer(p.alice, crypto.SHA256), certs(p.bob), []Privilege{{"info", false}}, testExpires.Add(time.Hour)); err == nil {
		t.Fatal("delegation outlives its parent")
	}
	if _, err := Delegate(cred, signer(p.alice, crypto.SHA256), certs(p.bob), []Privilege{{"authority", false}}, testExpires); err == nil {
		t.Fatal("delegated a privilege the parent lacks")
	}
}

func TestPrivilegesFor(t *testing.T) {
	if got := PrivilegesFor("Delete"); len(got) != 1 || got[0] != "deleteslice" {
		t.Errorf("PrivilegesFor(Delete) = %v", got)
	}
	if PrivilegesFor("ListResources") != nil || PrivilegesFor("Bogus") != nil {
		t.Error("ListResources and unknown methods need no operation")
	}
}

// ProtoGENI grants "*": the default rights of the target type (gcf).
func TestStarPrivilege(t *testing.T) {
	p := getPKI(t)
	cred, err := Issue(signer(p.sa, crypto.SHA1), Grant{Owner: certs(p.alice), Target: certs(p.slice), Expires: testExpires,
		Privileges: []Privilege{{"*", true}}})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authorize(p.verifier(), p, caller(p.alice), "Shutdown", urn("slice", "s1"), string(cred))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(auth.Privileges, ","); got != "refresh,embed,bind,control,info" {
		t.Fatalf("* expanded to %s", got)
	}
	// Delegating a part of it.
	d, err := Delegate(cred, signer(p.alice, crypto.SHA1), certs(p.bob), []Privilege{{"control", false}}, testExpires)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := authorize(p.verifier(), p, caller(p.bob), "Provision", urn("slice", "s1"), string(d)); err != nil {
		t.Fatal(err)
	}
}

func TestRefusalMessagesAreBounded(t *testing.T) {
	p := getPKI(t)
	long := strings.Repeat("é", 5000)
	_, err := p.verifier().Authorize(am.AuthRequest{Method: "Status", Caller: caller(p.alice), Now: testNow,
		Credentials: []am.Credential{{Type: long, Version: long, Value: "x"}, {Type: "geni_sfa", Version: "3", Value: "<" + long + "/>"}}})
	if msg := am.MessageOf(err); len(msg) > maxMessage+len("…") || am.CodeOf(err) != am.Forbidden {
		t.Fatalf("%d-byte message: %.80s", len(msg), msg)
	}
}

func TestCallerOf(t *testing.T) {
	p := getPKI(t)
	c, err := CallerOf(certs(p.alice))
	if err != nil || c.URN != urn("user", "alice") || c.Email != "alice@geniam.test" || len(c.Chain) != 2 {
		t.Fatalf("%+v %v", c, err)
	}
	for _, cs := range []*tls.ConnectionState{nil, {}} {
		if _, err := CallerFromTLS(cs); am.CodeOf(err) != am.Forbidden {
			t.Errorf("no certificate (%v): %v", cs, err)
		}
	}
	c, err = CallerFromTLS(&tls.ConnectionState{PeerCertificates: certs(p.alice)})
	if err != nil || c.Cert != p.alice.Cert {
		t.Errorf("CallerFromTLS: %+v %v", c, err)
	}
}
