package credentials

import (
	"crypto"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

func TestSpeaksFor(t *testing.T) {
	p := getPKI(t)
	v := p.verifier()
	slice := urn("slice", "s1")
	sliceCred, err := IssueSliceCredential(signer(p.sa, crypto.SHA256), certs(p.alice), certs(p.slice), testExpires)
	if err != nil {
		t.Fatal(err)
	}
	sfExpires := testExpires.Add(-time.Hour)
	sf, err := IssueSpeaksFor(signer(p.alice, crypto.SHA1), p.tool.Cert, sfExpires)
	if err != nil {
		t.Fatal(err)
	}
	// The same statement, signed by xmlsec1 as gcf's create_speaks_for does.
	sfXmlsec := xmlsecSign(t, speaksForTemplate(t, p), "Sig_ref0", "alice")

	req := func(speakingFor string, creds ...am.Credential) am.AuthRequest {
		return am.AuthRequest{Method: "Allocate", Caller: caller(p.tool), Target: slice, Privileges: PrivilegesFor("Allocate"),
			Now: testNow, SpeakingFor: speakingFor, Credentials: creds}
	}
	abac := func(s string) am.Credential { return am.Credential{Type: "geni_abac", Version: "1", Value: s} }

	for name, statement := range map[string]string{"ours": string(sf), "xmlsec1": sfXmlsec} {
		auth, err := v.Authorize(req(urn("user", "alice"), sfa(string(sliceCred)), abac(statement)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if auth.User != urn("user", "alice") || auth.Tool != urn("tool", "portal") {
			t.Fatalf("%s: %+v", name, auth)
		}
		if name == "ours" && !auth.Expires.Equal(sfExpires) {
			t.Fatalf("expires %v, want the speaks-for expiry %v", auth.Expires, sfExpires)
		}
	}

	// Without the option the tool is the caller and does not own the credential.
	_, err = v.Authorize(req("", sfa(string(sliceCred)), abac(string(sf))))
	wantRefusal(t, err, "owner is "+urn("user", "alice")+", not the caller "+urn("tool", "portal"))
	// The option without a speaks-for credential.
	_, err = v.Authorize(req(urn("user", "alice"), sfa(string(sliceCred))))
	wantRefusal(t, err, "speaks-for not accepted: no geni_abac speaks-for credential passed")
	// Speaking for someone else than the signer.
	_, err = v.Authorize(req(urn("user", "bob"), sfa(string(sliceCred)), abac(string(sf))))
	wantRefusal(t, err, "signed by "+urn("user", "alice")+", not by "+urn("user", "bob"))
	// Another tool (bob) presenting alice's statement for portal.
	other := req(urn("user", "alice"), sfa(string(sliceCred)), abac(string(sf)))
	other.Caller = caller(p.bob)
	_, err = v.Authorize(other)
	wantRefusal(t, err, "names tool key "+KeyID(p.tool.Cert))
	// Expired statement.
	old, err := IssueSpeaksFor(signer(p.alice, crypto.SHA256), p.tool.Cert, testNow.Add(-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Authorize(req(urn("user", "alice"), sfa(string(sliceCred)), abac(string(old))))
	wantRefusal(t, err, "speaks-for credential expired at")
	// A statement signed by an untrusted key.
	evil, err := IssueSpeaksFor(signer(p.evil, crypto.SHA256), p.tool.Cert, testExpires)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Authorize(req(urn("user", "alice"), sfa(string(sliceCred)), abac(string(evil))))
	wantRefusal(t, err, "speaks-for not accepted: credential ref0 signed by untrusted")
	// A speaks-for credential passed as geni_sfa is not a privilege credential.
	_, err = v.Authorize(req("", sfa(string(sf))))
	wantRefusal(t, err, "a credential of type abac was passed as geni_sfa")
}

func speaksForTemplate(t *testing.T, p *testPKI) string {
	userKey := KeyID(p.alice.Cert)
	return `<?xml version="1.0" encoding="UTF-8"?>
<signed-credential xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://www.geni.net/resources/credential/2/credential.xsd" xsi:schemaLocation="http://www.protogeni.net/resources/credential/ext/policy/1 http://www.protogeni.net/resources/credential/ext/policy/1/policy.xsd">
<credential xml:id="ref0">
<type>abac</type>
<serial/>
<owner_gid/>
<owner_urn/>
<target_gid/>
<target_urn/>
<uuid/>
<expires>` + formatTime(testExpires) + `</expires><abac>
<rt0>
<version>1.1</version>
<head>
<ABACprincipal><keyid>` + userKey + `</keyid><mnemonic>` + urn("user", "alice") + `</mnemonic></ABACprincipal>
<role>speaks_for_` + userKey + `</role>
</head>
<tail>
<ABACprincipal><keyid>` + KeyID(p.tool.Cert) + `</keyid><mnemonic>` + urn("tool", "portal") + `</mnemonic></ABACprincipal>
</tail>
</rt0>
</abac>
</credential>
<signatures>
` + sha1Template("ref0") + `</signatures>
</signed-credential>
`
}
