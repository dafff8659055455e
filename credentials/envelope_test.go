package credentials

import (
	"strings"
	"testing"
)

// An element outside the signed <credential> is covered by no signature:
// test_ListResources_badCredential_alteredObject (am_api_accept.py) inserts
// <foo/> there and expects the credential to be refused.
func TestParseCredentialRefusesUnsignedEnvelopeContent(t *testing.T) {
	good := readTestdata(t, "user-cred.xml")
	if _, err := ParseCredential([]byte(good)); err != nil {
		t.Fatalf("sample: %v", err)
	}
	i := strings.Index(good, "<credential ")
	for name, doc := range map[string]string{
		"foo before credential": good[:i] + "<foo/>" + good[i:],
		"foo after signatures":  strings.Replace(good, "</signed-credential>", "<foo/></signed-credential>", 1),
		"namespaced credential": good[:i] + `<x:credential xmlns:x="urn:x"/>` + good[i:],
	} {
		if _, err := ParseCredential([]byte(doc)); err == nil || !strings.Contains(err.Error(), "unsigned") {
			t.Errorf("%s: err = %v, want a refusal naming the unsigned element", name, err)
		}
	}
}
