package am

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/xmlrpc"
)

func TestAuditOptionsScrubs(t *testing.T) {
	raw := map[string]any{
		"geni_users":         []any{map[string]any{"urn": "urn:publicid:IDN+ch+user+a", "keys": []any{"ssh-rsa AAAA a", "ssh-ed25519 BBBB a"}}},
		"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"},
		"geni_end_time":      time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC),
		"my_api_token":       "s3cret",
		"nested":             map[string]any{"Password": "hunter2", "ok": int64(3)},
		"blob":               []byte("xyz"),
	}
	out := AuditOptions(raw)
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, secret := range []string{"AAAA", "BBBB", "s3cret", "hunter2"} {
		if strings.Contains(s, secret) {
			t.Errorf("%q leaked: %s", secret, s)
		}
	}
	for _, want := range []string{`"keys":2`, `"version":"3"`, `"2026-11-21T00:00:00Z"`, `"ok":3`, `{"bytes":3}`} {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %s", s, want)
		}
	}
}

func TestAuditRecordNilSafe(t *testing.T) {
	var r *AuditRecord
	r.NoteSlice("x")
	r.NoteSlivers("y")
	r.NoteAuthorization(&Authorization{User: "u"})
	r.NoteDeployed([]Sliver{{URN: "s"}})
	if AuditFrom(context.Background()) != nil {
		t.Fatal("record from an empty context")
	}
}

func TestPolicyGlobAndProject(t *testing.T) {
	if ProjectOf("urn:publicid:IDN+ch.geni.net:myproj+slice+s") != "ch.geni.net:myproj" || ProjectOf("urn:publicid:IDN+ch.geni.net+slice+s") != "" {
		t.Fatal("ProjectOf")
	}
	p := &OpsPolicy{Deny: []string{"[bad"}, Allow: []string{"ch.geni.net:*"}}
	// A malformed pattern matches nothing (the configuration loader rejects it first).
	if err := p.checkAccess(&Authorization{User: "urn:publicid:IDN+ch.geni.net:proj+user+a"}); err != nil {
		t.Fatalf("allowed by subauthority pattern: %v", err)
	}
	if err := p.checkAccess(&Authorization{User: "urn:publicid:IDN+other+user+a"}); CodeOf(err) != Forbidden {
		t.Fatalf("not on the allow list: %v", err)
	}
}

// FuzzAuditOptions: whatever options a caller sends, the audit copy is
// bounded, encodes as JSON and keeps no SSH key.
func FuzzAuditOptions(f *testing.F) {
	seeds := []string{
		`<?xml version="1.0"?><methodCall><methodName>Provision</methodName><params><param><value><struct>
<member><name>geni_users</name><value><array><data><value><struct><member><name>urn</name><value>urn:publicid:IDN+geni:gpo:gcf+user+alice</value></member>
<member><name>keys</name><value><array><data><value>ssh-rsa AAAAB3Nza alice</value></data></array></value></member></struct></value></data></array></value></member>
<member><name>geni_rspec_version</name><value><struct><member><name>type</name><value>GENI</value></member><member><name>version</name><value>3</value></member></struct></value></member>
<member><name>geni_end_time</name><value><dateTime.iso8601>20261121T00:00:00</dateTime.iso8601></value></member>
</struct></value></param></params></methodCall>`,
		`<?xml version="1.0"?><methodCall><methodName>X</methodName><params><param><value><struct><member><name>token</name><value><base64>eHl6</base64></value></member></struct></value></param></params></methodCall>`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		call, err := xmlrpc.DecodeCall(bytes.NewReader(body), xmlrpc.Limits{})
		if err != nil || len(call.Params) == 0 {
			return
		}
		raw, ok := call.Params[0].(map[string]any)
		if !ok {
			return
		}
		b, err := json.Marshal(AuditOptions(raw))
		if err != nil {
			t.Fatalf("audit options do not encode: %v", err)
		}
		if len(b) > 1<<20 {
			t.Fatalf("audit options of %d bytes", len(b))
		}
		if users, ok := raw["geni_users"].([]any); ok && len(users) > 0 {
			if ks, _ := json.Marshal(AuditOptions(map[string]any{"geni_users": users})); strings.Contains(string(ks), "ssh-") {
				t.Fatalf("SSH key kept: %s", ks)
			}
		}
	})
}

func TestAuditNotesSpeaksFor(t *testing.T) {
	rec := &AuditRecord{Caller: "urn:publicid:IDN+ch+user+portal"}
	rec.NoteAuthorization(&Authorization{User: "urn:publicid:IDN+ch+user+alice", Tool: "urn:publicid:IDN+ch+user+portal", Digest: "d", Issuer: "i"})
	rec.NoteSlivers("a", "b", "a")
	v := rec.View()
	if v.User != "urn:publicid:IDN+ch+user+alice" || !v.SpeaksFor || v.CredentialDigest != "d" || v.CredentialIssuer != "i" || len(v.SliverURNs) != 2 {
		t.Fatalf("view %+v", v)
	}
	if AuditCodeName(-32601) != "FAULT-32601" || AuditCodeName(Refused) != "REFUSED" {
		t.Fatal("code names")
	}
}
