package credentials

import (
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

var (
	testNow     = time.Now().UTC().Truncate(time.Second)
	testExpires = testNow.Add(24 * time.Hour)
	allSlice    = []string{"refresh:true", "embed:true", "bind:true", "control:true", "info:true"}
)

// authorize asks v whether who may run method on target with creds.
func authorize(v *Verifier, p *testPKI, who *am.Caller, method, target string, creds ...string) (*am.Authorization, error) {
	req := am.AuthRequest{Method: method, Caller: who, Target: target, Privileges: PrivilegesFor(method), Now: testNow}
	for _, c := range creds {
		req.Credentials = append(req.Credentials, sfa(c))
	}
	return v.Authorize(req)
}

// xmlsecSliceCred is a slice credential for owner, signed by the SA with xmlsec1.
func xmlsecSliceCred(t *testing.T, sha1 bool, privs []string) string {
	p := getPKI(t)
	tmpl := sha256Template("ref0")
	if sha1 {
		tmpl = sha1Template("ref0")
	}
	return signedDoc(t, credXML("ref0", p.alice, p.slice, testExpires, privs, ""), nil, "ref0", tmpl, "sa")
}

func TestXmlsecSigned(t *testing.T) {
	p := getPKI(t)
	v := p.verifier()
	for _, sha1 := range []bool{true, false} {
		cred := xmlsecSliceCred(t, sha1, allSlice)
		auth, err := authorize(v, p, caller(p.alice), "Allocate", urn("slice", "s1"), cred)
		if err != nil {
			t.Fatalf("sha1=%v: %v", sha1, err)
		}
		if auth.User != urn("user", "alice") || auth.Issuer != urn("authority", "sa") || !auth.Expires.Equal(testExpires) {
			t.Fatalf("%+v", auth)
		}
	}
}

// delegated2 is SA -> alice (ref0) -> bob (ref1) -> carol (ref2), each level
// signed by xmlsec1 as gcf does it.
func delegated2(t *testing.T) string {
	p := getPKI(t)
	c0 := credXML("ref0", p.alice, p.slice, testExpires, allSlice, "")
	d0 := signedDoc(t, c0, nil, "ref0", sha1Template("ref0"), "sa")
	c1 := credXML("ref1", p.bob, p.slice, testExpires.Add(-time.Hour), allSlice, credentialOf(t, d0))
	d1 := signedDoc(t, c1, signaturesOf(t, d0), "ref1", sha256Template("ref1"), "alice")
	c2 := credXML("ref2", p.carol, p.slice, testExpires.Add(-2*time.Hour), []string{"control:false", "info:false"}, credentialOf(t, d1))
	return signedDoc(t, c2, signaturesOf(t, d1), "ref2", sha1Template("ref2"), "bob")
}

func TestXmlsecDelegatedTwoLevels(t *testing.T) {
	p := getPKI(t)
	v := p.verifier()
	doc := delegated2(t)
	auth, err := authorize(v, p, caller(p.carol), "Allocate", urn("slice", "s1"), doc)
	if err != nil {
		t.Fatal(err)
	}
	if auth.User != urn("user", "carol") || auth.Issuer != urn("user", "bob") || !auth.Expires.Equal(testExpires.Add(-2*time.Hour)) {
		t.Fatalf("%+v", auth)
	}
	// control does not grant shutdown.
	_, err = authorize(v, p, caller(p.carol), "Shutdown", urn("slice", "s1"), doc)
	wantRefusal(t, err, "lacks privilege shutdown")
	// Bob, an intermediate owner, does not own the outer credential.
	_, err = authorize(v, p, caller(p.bob), "Allocate", urn("slice", "s1"), doc)
	wantRefusal(t, err, "owner is "+urn("user", "carol")+", not the caller "+urn("user", "bob"))
}

// Our signer's output must satisfy xmlsec1, signature by signature.
func TestXmlsecAcceptsOurs(t *testing.T) {
	p := getPKI(t)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		cred, err := IssueSliceCredential(signer(p.sa, h), certs(p.alice), certs(p.slice), testExpires)
		if err != nil {
			t.Fatal(err)
		}
		if err := xmlsecVerify(t, string(cred), "Sig_ref0"); err != nil {
			t.Fatal(err)
		}
		d1, err := Delegate(cred, signer(p.alice, h), certs(p.bob), []Privilege{{"control", true}, {"info", false}}, testExpires)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := Delegate(d1, signer(p.bob, h), certs(p.carol), []Privilege{{"control", false}}, testExpires)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"Sig_ref0", "Sig_ref1", "Sig_ref2"} {
			if err := xmlsecVerify(t, string(d2), id); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
		}
		if _, err := authorize(p.verifier(), p, caller(p.carol), "Renew", urn("slice", "s1"), string(d2)); err != nil {
			t.Fatal(err)
		}
		u, err := IssueUserCredential(signer(p.ca, h), certs(p.alice), testExpires)
		if err != nil {
			t.Fatal(err)
		}
		if err := xmlsecVerify(t, string(u), "Sig_ref0"); err != nil {
			t.Fatal(err)
		}
		sf, err := IssueSpeaksFor(signer(p.alice, h), p.tool.Cert, testExpires)
		if err != nil {
			t.Fatal(err)
		}
		if err := xmlsecVerify(t, string(sf), "Sig_ref0"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestXmlsecRefusals(t *testing.T) {
	p := getPKI(t)
	slice := urn("slice", "s1")
	good := xmlsecSliceCred(t, true, allSlice)
	other := signedDoc(t, credXML("ref0", p.alice, p.slice2, testExpires, allSlice, ""), nil, "ref0", sha1Template("ref0"), "sa")
	deleg := delegated2(t)
	expired := signedDoc(t, credXML("ref0", p.alice, p.slice, testNow.Add(-time.Minute), allSlice, ""), nil, "ref0", sha1Template("ref0"), "sa")
	bobs := signedDoc(t, credXML("ref0", p.bob, p.slice, testExpires, allSlice, ""), nil, "ref0", sha1Template("ref0"), "sa")
	evil := signedDoc(t, credXML("ref0", p.alice, p.slice, testExpires, allSlice, ""), nil, "ref0", sha1Template("ref0"), "evil")
	infoOnly := signedDoc(t, credXML("ref0", p.alice, p.slice, testExpires, []string{"info:true"}, ""), nil, "ref0", sha1Template("ref0"), "sa")
	byUser := signedDoc(t, credXML("ref0", p.alice, p.slice, testExpires, allSlice, ""), nil, "ref0", sha1Template("ref0"), "alice")
	user := signedDoc(t, credXML("ref0", p.alice, p.alice, testExpires, []string{"refresh:false", "resolve:false", "info:false"}, ""), nil, "ref0", sha1Template("ref0"), "sa")

	// Delegations that break the rules, each validly signed.
	noDeleg := signedDoc(t, credXML("ref0", p.alice, p.slice, testExpires, []string{"control:false", "info:false"}, ""), nil, "ref0", sha1Template("ref0"), "sa")
	notDelegatable := signedDoc(t, credXML("ref1", p.bob, p.slice, testExpires, []string{"control:false"}, credentialOf(t, noDeleg)),
		signaturesOf(t, noDeleg), "ref1", sha1Template("ref1"), "alice")
	narrow := signedDoc(t, credXML("ref0", p.alice, p.slice, testExpires, []string{"info:true"}, ""), nil, "ref0", sha1Template("ref0"), "sa")
	broader := signedDoc(t, credXML("ref1", p.bob, p.slice, testExpires, []string{"control:false"}, credentialOf(t, narrow)),
		signaturesOf(t, narrow), "ref1", sha1Template("ref1"), "alice")
	longer := signedDoc(t, credXML("ref1", p.bob, p.slice, testExpires.Add(time.Hour), []string{"control:false"}, credentialOf(t, good)),
		signaturesOf(t, good), "ref1", sha1Template("ref1"), "alice")
	wrongDelegator := signedDoc(t, credXML("ref1", p.bob, p.slice, testExpires, []string{"control:false"}, credentialOf(t, good)),
		signaturesOf(t, good), "ref1", sha1Template("ref1"), "carol")
	// Alice extends her credential's expiry, then signs a delegation over it.
	forged := strings.Replace(credentialOf(t, good), formatTime(testExpires), formatTime(testExpires.Add(48*time.Hour)), 1)
	forgedParent := signedDoc(t, credXML("ref1", p.bob, p.slice, testExpires, []string{"control:false"}, forged),
		signaturesOf(t, good), "ref1", sha1Template("ref1"), "alice")
	otherTarget := signedDoc(t, credXML("ref1", p.bob, p.slice2, testExpires, []string{"control:false"}, credentialOf(t, good)),
		signaturesOf(t, good), "ref1", sha1Template("ref1"), "alice")

	cases := []struct {
		name   string
		who    *am.Caller
		method string
		target string
		cred   string
		want   string
	}{
		{"tampered body", caller(p.alice), "Allocate", slice, strings.Replace(good, "<serial>8</serial>", "<serial>9</serial>", 1), "ref0 does not match: its content was altered"},
		{"tampered SignedInfo", caller(p.alice), "Allocate", slice, strings.Replace(good, algC14N, algExcC14N, 1), "signature over ref0 does not verify"},
		{"whitespace inside tags is not tampering", caller(p.alice), "Allocate", slice, strings.Replace(good, `URI="#ref0">`, `URI="#ref0"  >`, 1), "OK"},
		{"tampered parent", caller(p.carol), "Allocate", slice, tamperParent(t, deleg), "bad signature on credential ref2: digest of ref2 does not match"},
		{"parent tampered by the delegator", caller(p.bob), "Allocate", slice, forgedParent, "bad signature on credential ref0: digest of ref0 does not match"},
		{"tampered parent privilege", caller(p.carol), "Allocate", slice, tamperParentPrivilege(t, deleg), "bad signature on credential ref"},
		{"signature moved to another credential", caller(p.alice), "Allocate", slice,
			strings.Replace(good, signaturesOf(t, good)[0], signaturesOf(t, other)[0], 1), "bad signature on credential ref0: digest of ref0 does not match"},
		{"duplicate xml:id", caller(p.alice), "Allocate", slice,
			strings.Replace(good, "<signatures>", "<extra>"+strings.Replace(credentialOf(t, other), "<credential ", "<credential ", 1)+"</extra><signatures>", 1), `xml:id "ref0" appears twice`},
		{"wrong owner", caller(p.alice), "Allocate", slice, bobs, "owner is " + urn("user", "bob") + ", not the caller " + urn("user", "alice")},
		{"wrong target", caller(p.alice), "Allocate", slice, other, "target is " + urn("slice", "s2") + ", not " + slice},
		{"expired", caller(p.alice), "Allocate", slice, expired, "credential expired at " + formatTime(testNow.Add(-time.Minute))},
		{"untrusted signer", caller(p.alice), "Allocate", slice, evil, "signed by untrusted " + urn("authority", "ca")},
		{"signer not an authority", caller(p.alice), "Allocate", slice, byUser, "is not an authority over target"},
		{"privilege not delegatable", caller(p.bob), "Allocate", slice, notDelegatable, "privilege control is not delegatable in parent credential ref0"},
		{"child broader than parent", caller(p.bob), "Allocate", slice, broader, "grants control, which its parent ref0 does not"},
		{"child outlives parent", caller(p.bob), "Allocate", slice, longer, "after its parent"},
		{"delegated by a non-owner", caller(p.bob), "Allocate", slice, wrongDelegator, "not by " + urn("user", "alice") + ", the owner of its parent"},
		{"delegation changes the target", caller(p.bob), "Allocate", urn("slice", "s2"), otherTarget, "its parent ref0 has " + slice},
		{"lacks privilege", caller(p.alice), "Allocate", slice, infoOnly, "lacks privilege createsliver"},
		{"user credential as slice credential", caller(p.alice), "Allocate", slice, user, "a user credential cannot act on a slice"},
		{"malformed XML", caller(p.alice), "Allocate", slice, good[:len(good)/2], "malformed credential: malformed XML"},
		{"DOCTYPE", caller(p.alice), "Allocate", slice, strings.Replace(good, "<signed-credential", `<!DOCTYPE x [<!ENTITY e "boom">]><signed-credential`, 1), "DOCTYPE"},
		{"not a credential", caller(p.alice), "ListResources", "", "<a/>", "not <signed-credential>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := authorize(p.verifier(), p, c.who, c.method, c.target, c.cred)
			if c.want == "OK" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefusal(t, err, c.want)
		})
	}

	v := p.verifier()
	t.Run("unknown geni_type", func(t *testing.T) {
		_, err := v.Authorize(am.AuthRequest{Method: "ListResources", Caller: caller(p.alice), Now: testNow,
			Credentials: []am.Credential{{Type: "geni_foo", Version: "1", Value: good}}})
		wantRefusal(t, err, "no usable credential: geni_foo version 1 not supported")
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err := v.Authorize(am.AuthRequest{Method: "ListResources", Caller: caller(p.alice), Now: testNow})
		wantRefusal(t, err, "no credentials passed")
	})
	t.Run("best candidate wins", func(t *testing.T) {
		_, err := authorize(v, p, caller(p.alice), "Allocate", slice, "<junk/>", user, other)
		wantRefusal(t, err, "target is "+urn("slice", "s2")+", not "+slice)
	})
	t.Run("one good credential suffices", func(t *testing.T) {
		if _, err := authorize(v, p, caller(p.alice), "Allocate", slice, "<junk/>", user, other, good); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ListResources with a user credential", func(t *testing.T) {
		if _, err := authorize(v, p, caller(p.alice), "ListResources", "", user); err != nil {
			t.Fatal(err)
		}
	})
}

// tamperParent changes the serial of the innermost credential.
func tamperParent(t *testing.T, doc string) string {
	i := strings.Index(doc, `<credential xml:id="ref0"><type>privilege</type><serial>8</serial>`)
	if i < 0 {
		t.Fatal("no parent to tamper with")
	}
	return strings.Replace(doc, `<credential xml:id="ref0"><type>privilege</type><serial>8</serial>`,
		`<credential xml:id="ref0"><type>privilege</type><serial>9</serial>`, 1)
}

// tamperParentPrivilege gives the innermost credential of a delegated
// document a broader privilege set (can_delegate flipped on).
func tamperParentPrivilege(t *testing.T, doc string) string {
	i := strings.Index(doc, `<credential xml:id="ref0">`)
	j := strings.Index(doc[i:], "<can_delegate>true</can_delegate>")
	if i < 0 || j < 0 {
		t.Fatal("no parent privilege to tamper with")
	}
	k := i + j
	return doc[:k] + "<can_delegate>1</can_delegate>" + doc[k+len("<can_delegate>true</can_delegate>"):]
}
