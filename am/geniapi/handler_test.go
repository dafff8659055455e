package geniapi

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

var (
	cred    = map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "<signed-credential/>"}
	creds   = []any{cred}
	rspecV3 = map[string]any{"type": "GENI", "version": "3"}
)

func aliceCert(t testing.TB) *devpki.Identity {
	t.Helper()
	ca := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+example+authority+ca", KeyBits: 1024})
	return ca.Issue(devpki.Options{URN: aliceURN, Email: "alice@example.org", KeyBits: 1024})
}

var logIDSuffix = regexp.MustCompile(` \(log id [0-9a-f]{12}\)$`)

func TestBadInput(t *testing.T) {
	fake := &fakeAM{}
	h := NewHandler(fake, HandlerOptions{})
	alice := aliceCert(t).Cert
	sliverOf := func(name string) string { return "urn:publicid:IDN+am.example+sliver+" + name }
	cases := []struct {
		name   string
		method string
		params []any
		code   am.Code
		output string // substring of output
	}{
		{"GetVersion two args", "GetVersion", []any{map[string]any{}, map[string]any{}}, am.BadArgs, "GetVersion takes 1 arguments (options), got 2"},
		{"GetVersion options not struct", "GetVersion", []any{"x"}, am.BadArgs, "options must be a struct, not a string"},
		{"ListResources no args", "ListResources", nil, am.BadArgs, "ListResources takes 2 arguments (credentials, options), got 0"},
		{"ListResources no options", "ListResources", []any{creds}, am.BadArgs, "got 1"},
		{"ListResources creds not array", "ListResources", []any{"cred", map[string]any{}}, am.BadArgs, "credentials must be an array, not a string"},
		{"credential int", "ListResources", []any{[]any{int64(1)}, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "credentials[0] must be a struct"},
		{"credential no value", "ListResources", []any{[]any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3"}}, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "credentials[0] has no geni_value"},
		{"credential type wrong", "ListResources", []any{[]any{map[string]any{"geni_type": true, "geni_version": "3", "geni_value": "x"}}, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "credentials[0].geni_type must be a string, not a boolean"},
		{"no rspec version", "ListResources", []any{creds, map[string]any{}}, am.BadArgs, "geni_rspec_version is required"},
		{"rspec version no version", "ListResources", []any{creds, map[string]any{"geni_rspec_version": map[string]any{"type": "GENI"}}}, am.BadArgs, "geni_rspec_version has no version"},
		{"rspec version not struct", "ListResources", []any{creds, map[string]any{"geni_rspec_version": "GENI 3"}}, am.BadArgs, "geni_rspec_version must be a struct"},
		{"rspec version unsupported", "ListResources", []any{creds, map[string]any{"geni_rspec_version": map[string]any{"type": "ProtoGENI", "version": "2"}}}, am.BadVersion, `"ProtoGENI" version "2" is not supported`},
		{"v2 slice option", "ListResources", []any{creds, map[string]any{"geni_rspec_version": rspecV3, "geni_slice_urn": sliceURN}}, am.BadArgs, "geni_slice_urn"},
		{"available not bool", "ListResources", []any{creds, map[string]any{"geni_rspec_version": rspecV3, "geni_available": "yes"}}, am.BadArgs, `option geni_available must be a boolean, not the string "yes"`},
		{"compressed int 2", "ListResources", []any{creds, map[string]any{"geni_rspec_version": rspecV3, "geni_compressed": int64(2)}}, am.BadArgs, "geni_compressed must be a boolean, not the int 2"},
		{"options array", "ListResources", []any{creds, []any{}}, am.BadArgs, "options must be a struct, not a array"},
		{"Describe urns not array", "Describe", []any{sliceURN, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "urns must be an array of strings, not a string"},
		{"Describe empty urns", "Describe", []any{[]any{}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "urns is empty"},
		{"Describe urn int", "Describe", []any{[]any{int64(3)}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "urns[0] must be a string, not a int"},
		{"Describe node urn", "Describe", []any{[]any{"urn:publicid:IDN+am.example+node+n1"}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, `has type "node", want slice or sliver`},
		{"Describe not a urn", "Describe", []any{[]any{"slice1"}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "does not start with urn:publicid:IDN+"},
		{"Describe urn with space", "Describe", []any{[]any{"urn:publicid:IDN+ex+slice+a b"}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "space"},
		{"Describe urn missing name", "Describe", []any{[]any{"urn:publicid:IDN+ex+slice"}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "is not of the form"},
		{"Describe two slices", "Describe", []any{[]any{sliceURN, "urn:publicid:IDN+example+slice+s2"}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "names 2 slices"},
		{"Describe slice and sliver", "Describe", []any{[]any{sliceURN, sliver1}, creds, map[string]any{"geni_rspec_version": rspecV3}}, am.BadArgs, "mixes a slice URN with sliver URNs"},
		{"Describe no rspec version", "Describe", []any{[]any{sliceURN}, creds, map[string]any{}}, am.BadArgs, "geni_rspec_version is required"},
		{"Describe sliver INVALID", "Describe", []any{[]any{sliverOf("INVALID")}, creds, map[string]any{"geni_rspec_version": map[string]any{"type": "geni", "version": "4"}}}, am.BadVersion, "not supported"},
		{"Allocate slice not string", "Allocate", []any{[]any{sliceURN}, creds, "<rspec/>", map[string]any{}}, am.BadArgs, "slice_urn must be a string, not a array"},
		{"Allocate sliver urn", "Allocate", []any{sliver1, creds, "<rspec/>", map[string]any{}}, am.BadArgs, `slice_urn: "` + sliver1 + `" has type "sliver", want slice`},
		{"Allocate rspec not string", "Allocate", []any{sliceURN, creds, int64(1), map[string]any{}}, am.BadArgs, "rspec must be a string, not a int"},
		{"Allocate bad end time", "Allocate", []any{sliceURN, creds, "<rspec/>", map[string]any{"geni_end_time": "tomorrow"}}, am.BadArgs, `option geni_end_time: "tomorrow" is not an RFC 3339 time`},
		{"Allocate end time int", "Allocate", []any{sliceURN, creds, "<rspec/>", map[string]any{"geni_end_time": int64(5)}}, am.BadArgs, "geni_end_time must be an RFC 3339 string, not a int"},
		{"Allocate start time bad", "Allocate", []any{sliceURN, creds, "<rspec/>", map[string]any{"geni_start_time": "2026-13-01T00:00:00Z"}}, am.BadArgs, "geni_start_time"},
		{"Renew bad time", "Renew", []any{[]any{sliceURN}, creds, "next week", map[string]any{}}, am.BadArgs, `expiration_time: "next week" is not an RFC 3339 time`},
		{"Renew time not string", "Renew", []any{[]any{sliceURN}, creds, true, map[string]any{}}, am.BadArgs, "expiration_time must be an RFC 3339 string, not a boolean"},
		{"Renew alap not bool", "Renew", []any{[]any{sliceURN}, creds, "2026-01-01T00:00:00Z", map[string]any{"geni_extend_alap": "true"}}, am.BadArgs, "geni_extend_alap must be a boolean"},
		{"Provision no rspec version", "Provision", []any{[]any{sliceURN}, creds, map[string]any{}}, am.BadArgs, "geni_rspec_version is required"},
		{"Provision users not array", "Provision", []any{[]any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3, "geni_users": map[string]any{}}}, am.BadArgs, "geni_users must be an array"},
		{"Provision user no keys", "Provision", []any{[]any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3, "geni_users": []any{map[string]any{"urn": aliceURN}}}}, am.BadArgs, "geni_users[0] has no keys array"},
		{"Provision user bad urn", "Provision", []any{[]any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3, "geni_users": []any{map[string]any{"urn": "alice", "keys": []any{}}}}}, am.BadArgs, "geni_users[0].urn"},
		{"Provision user key int", "Provision", []any{[]any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3, "geni_users": []any{map[string]any{"urn": aliceURN, "keys": []any{int64(1)}}}}}, am.BadArgs, "geni_users[0].keys[0] must be a string"},
		{"Provision best effort string", "Provision", []any{[]any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3, "geni_best_effort": "no"}}, am.BadArgs, "geni_best_effort must be a boolean"},
		{"Status speaking for int", "Status", []any{[]any{sliceURN}, creds, map[string]any{"geni_speaking_for": int64(1)}}, am.BadArgs, "geni_speaking_for must be a string, not a int"},
		{"Status three args too many", "Status", []any{[]any{sliceURN}, creds, map[string]any{}, "x"}, am.BadArgs, "Status takes 3 arguments (urns, credentials, options), got 4"},
		{"POA action not string", "PerformOperationalAction", []any{[]any{sliceURN}, creds, int64(1), map[string]any{}}, am.BadArgs, "action must be a string, not a int"},
		{"POA empty action", "PerformOperationalAction", []any{[]any{sliceURN}, creds, "", map[string]any{}}, am.BadArgs, "action is empty"},
		{"Delete creds nil", "Delete", []any{[]any{sliceURN}, nil, map[string]any{}}, am.BadArgs, "credentials must be an array, not a nil"},
		{"Shutdown sliver urn", "Shutdown", []any{sliver1, creds, map[string]any{}}, am.BadArgs, "want slice"},
		{"Shutdown urns array", "Shutdown", []any{[]any{sliceURN}, creds, map[string]any{}}, am.BadArgs, "slice_urn must be a string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake.mu.Lock()
			fake.method = ""
			fake.mu.Unlock()
			resp := callDirect(t, h, alice, c.method, c.params...)
			if got := am.Code(codeOf(t, resp)); got != c.code {
				t.Errorf("code %v, want %v (output %q)", got, c.code, resp["output"])
			}
			out, _ := resp["output"].(string)
			if !strings.Contains(out, c.output) {
				t.Errorf("output %q does not mention %q", out, c.output)
			}
			if !logIDSuffix.MatchString(out) {
				t.Errorf("output %q does not end with a log id", out)
			}
			if m := fake.last().method; m != "" {
				t.Errorf("the aggregate was called (%s) despite bad arguments", m)
			}
			code := resp["code"].(map[string]any)
			if code["am_type"] != "geniam" || code["am_code"] != int64(c.code) {
				t.Errorf("code struct %#v", code)
			}
		})
	}
}

func TestOptionsParsed(t *testing.T) {
	fake := &fakeAM{}
	h := NewHandler(fake, HandlerOptions{})
	alice := aliceCert(t)
	opts := map[string]any{
		"geni_rspec_version": map[string]any{"type": "geni", "version": int64(3)},
		"geni_best_effort":   true,
		"geni_end_time":      "2026-11-22T12:00:00.5+01:00",
		"geni_users": []any{map[string]any{"urn": aliceURN, "keys": []any{"ssh-rsa AAAA alice"}},
			map[string]any{"urn": "urn:publicid:IDN+example+user+bob", "keys": []any{}}},
		"geni_speaking_for": aliceURN,
		"geni_compressed":   int64(0),
		"unknown_option":    []any{"ignored", int64(1)},
	}
	resp := callDirect(t, h, alice.Cert, "Provision", []any{sliver1, sliver2},
		[]any{cred, "<bare v2 credential/>", map[string]any{"geni_type": "geni_abac", "geni_version": int64(1), "geni_value": "abac"}}, opts)
	if codeOf(t, resp) != 0 {
		t.Fatalf("Provision: %#v", resp)
	}
	got := fake.last()
	c := got.call
	end := time.Date(2026, 11, 22, 11, 0, 0, 5e8, time.UTC)
	if got.method != "Provision" || !reflect.DeepEqual(got.urns, []string{sliver1, sliver2}) {
		t.Errorf("called %s with %v", got.method, got.urns)
	}
	if !c.Options.BestEffort || c.Options.Compressed || c.Options.EndTime == nil || !c.Options.EndTime.Equal(end) ||
		c.Options.EndTime.Location() != time.UTC || c.Options.SpeakingFor != aliceURN || !c.Options.UsersSet ||
		!reflect.DeepEqual(*c.Options.RSpecVersion, am.RSpecVersion{Type: "geni", Version: "3"}) || c.Options.Raw["unknown_option"] == nil {
		t.Errorf("options parsed as %+v", c.Options)
	}
	wantUsers := []am.User{{URN: aliceURN, Keys: []string{"ssh-rsa AAAA alice"}}, {URN: "urn:publicid:IDN+example+user+bob", Keys: []string{}}}
	if !reflect.DeepEqual(c.Options.Users, wantUsers) {
		t.Errorf("users %+v", c.Options.Users)
	}
	wantCreds := []am.Credential{{Type: "geni_sfa", Version: "3", Value: "<signed-credential/>"},
		{Type: "geni_sfa", Version: "3", Value: "<bare v2 credential/>"}, {Type: "geni_abac", Version: "1", Value: "abac"}}
	if !reflect.DeepEqual(c.Credentials, wantCreds) {
		t.Errorf("credentials %+v", c.Credentials)
	}
	if c.Caller == nil || c.Caller.URN != aliceURN || c.Caller.Email != "alice@example.org" || c.Caller.Cert != alice.Cert {
		t.Errorf("caller %+v", c.Caller)
	}
	if len(c.LogID) != 12 {
		t.Errorf("log id %q", c.LogID)
	}

	// Times without a zone are UTC; a dateTime.iso8601 is accepted too.
	for _, tc := range []struct {
		v    any
		want time.Time
	}{
		{"2026-11-22T12:00:00", time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)},
		{"2026-11-22T12:00:00Z", time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)},
		{"2026-11-22 12:00:00+00:00", time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)},
		{"2026-11-22T12:00:00.123456-0500", time.Date(2026, 11, 22, 17, 0, 0, 123456000, time.UTC)},
		{time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC), time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)},
	} {
		resp := callDirect(t, h, alice.Cert, "Renew", []any{sliceURN}, creds, tc.v, map[string]any{"geni_extend_alap": true})
		if codeOf(t, resp) != 0 {
			t.Errorf("Renew(%v): %#v", tc.v, resp)
			continue
		}
		if got := fake.last(); !got.exp.Equal(tc.want) || got.exp.Location() != time.UTC || !got.call.Options.ExtendALAP {
			t.Errorf("Renew(%v): expiration %v, options %+v", tc.v, got.exp, got.call.Options)
		}
	}
}

func TestResults(t *testing.T) {
	fake := &fakeAM{}
	h := NewHandler(fake, HandlerOptions{})
	alice := aliceCert(t).Cert
	want := func(resp map[string]any, value any) {
		t.Helper()
		if codeOf(t, resp) != 0 || resp["output"] != "" {
			t.Fatalf("not a success: %#v", resp)
		}
		if !reflect.DeepEqual(resp["value"], value) {
			t.Errorf("value\n got %#v\nwant %#v", resp["value"], value)
		}
		if _, ok := resp["geni_api"]; ok {
			t.Errorf("geni_api at the top level of a call other than GetVersion")
		}
	}
	exp := "2026-11-22T10:30:00Z"
	ready := func(urn string) map[string]any {
		return map[string]any{"geni_sliver_urn": urn, "geni_allocation_status": "geni_provisioned",
			"geni_operational_status": "geni_ready", "geni_expires": exp, "geni_client_id": "n1"}
	}
	both := []any{ready(sliver1), ready(sliver2)}
	want(callDirect(t, h, alice, "ListResources", []any{}, map[string]any{"geni_rspec_version": rspecV3}), adRSpec)
	want(callDirect(t, h, alice, "Describe", []any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3}),
		map[string]any{"geni_rspec": manifest, "geni_urn": sliceURN, "geni_slivers": both})
	want(callDirect(t, h, alice, "Allocate", sliceURN, creds, "<rspec/>", map[string]any{}),
		map[string]any{"geni_rspec": manifest, "geni_slivers": []any{map[string]any{"geni_sliver_urn": sliver1,
			"geni_allocation_status": "geni_allocated", "geni_expires": exp}}})
	if got := fake.last(); got.slice != sliceURN || got.rspec != "<rspec/>" {
		t.Errorf("Allocate got %q %q", got.slice, got.rspec)
	}
	want(callDirect(t, h, alice, "Renew", []any{sliver1}, creds, exp, map[string]any{}), both)
	want(callDirect(t, h, alice, "Provision", []any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3}),
		map[string]any{"geni_rspec": manifest, "geni_slivers": both})
	st1, st2 := ready(sliver1), ready(sliver2)
	st1["geni_error"] = ""
	st2["geni_error"], st2["geni_operational_status"] = "boom", "geni_failed"
	want(callDirect(t, h, alice, "Status", []any{sliceURN}, creds, map[string]any{}),
		map[string]any{"geni_urn": sliceURN, "geni_slivers": []any{st1, st2}})
	want(callDirect(t, h, alice, "PerformOperationalAction", []any{sliver1, sliver2}, creds, "geni_start", map[string]any{}), both)
	if got := fake.last(); got.action != "geni_start" || len(got.urns) != 2 {
		t.Errorf("POA got %q %v", got.action, got.urns)
	}
	want(callDirect(t, h, alice, "Delete", []any{sliceURN}, creds, map[string]any{}),
		[]any{map[string]any{"geni_sliver_urn": sliver1, "geni_allocation_status": "geni_unallocated", "geni_expires": exp}})
	want(callDirect(t, h, alice, "Shutdown", sliceURN, creds, map[string]any{}), true)
	if got := fake.last(); got.slice != sliceURN {
		t.Errorf("Shutdown got %q", got.slice)
	}
}

func decompress(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("not base64: %v", err)
	}
	z, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not zlib: %v", err)
	}
	out, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestCompressed(t *testing.T) {
	h := NewHandler(&fakeAM{}, HandlerOptions{})
	alice := aliceCert(t).Cert
	opts := map[string]any{"geni_rspec_version": rspecV3, "geni_compressed": true}
	resp := callDirect(t, h, alice, "ListResources", creds, opts)
	if got := decompress(t, resp["value"].(string)); got != adRSpec {
		t.Errorf("ListResources decompressed to %q", got)
	}
	resp = callDirect(t, h, alice, "Describe", []any{sliceURN}, creds, opts)
	if got := decompress(t, resp["value"].(map[string]any)["geni_rspec"].(string)); got != manifest {
		t.Errorf("Describe decompressed to %q", got)
	}
	// Allocate and Provision are not compressed.
	resp = callDirect(t, h, alice, "Provision", []any{sliceURN}, creds, opts)
	if got := resp["value"].(map[string]any)["geni_rspec"]; got != manifest {
		t.Errorf("Provision rspec %q", got)
	}
}

func TestErrors(t *testing.T) {
	log, logs := newLogger()
	fake := &fakeAM{}
	h := NewHandler(fake, HandlerOptions{Logger: log})
	alice := aliceCert(t).Cert
	idOf := func(out string) string {
		m := regexp.MustCompile(`log id ([0-9a-f]{12})`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no log id in %q", out)
		}
		return m[1]
	}

	fake.err = am.Errorf(am.SearchFailed, "no slice %s here", sliceURN)
	resp := callDirect(t, h, alice, "Status", []any{sliceURN}, creds, map[string]any{})
	out := resp["output"].(string)
	if codeOf(t, resp) != int64(am.SearchFailed) || !strings.HasPrefix(out, "no slice "+sliceURN+" here (log id ") || resp["value"] != "" {
		t.Errorf("SEARCHFAILED reply %#v", resp)
	}
	if c := fake.last().call; c.LogID != idOf(out) {
		t.Errorf("am.Call.LogID %q, output %q", c.LogID, out)
	}

	fake.err = am.Wrap(am.Forbidden, errors.New("xmlsec detail"), "credential expired")
	resp = callDirect(t, h, alice, "Delete", []any{sliceURN}, creds, map[string]any{})
	if out := resp["output"].(string); codeOf(t, resp) != int64(am.Forbidden) || strings.Contains(out, "xmlsec") || !logIDSuffix.MatchString(out) {
		t.Errorf("FORBIDDEN reply %#v", resp)
	}
	if !strings.Contains(logs.String(), "xmlsec detail") {
		t.Errorf("wrapped cause not logged:\n%s", logs)
	}

	fake.err = &am.Err{Code: am.Busy}
	resp = callDirect(t, h, alice, "Delete", []any{sliceURN}, creds, map[string]any{})
	if out := resp["output"].(string); codeOf(t, resp) != int64(am.Busy) || !strings.HasPrefix(out, "BUSY (log id") {
		t.Errorf("bare BUSY reply %#v", resp)
	}

	fake.err = errors.New("pq: connection refused to 10.0.0.5")
	for _, method := range []string{"Delete", "GetVersion"} {
		var params []any
		if method == "Delete" {
			params = []any{[]any{sliceURN}, creds, map[string]any{}}
		}
		resp = callDirect(t, h, alice, method, params...)
		out = resp["output"].(string)
		id := idOf(out)
		if codeOf(t, resp) != int64(am.ServerError) || out != "internal error; log id "+id {
			t.Errorf("internal error reply %#v", resp)
		}
		if !strings.Contains(logs.String(), "log_id="+id) || !strings.Contains(logs.String(), "10.0.0.5") {
			t.Errorf("cause not logged with log id %s:\n%s", id, logs)
		}
	}
	if resp["geni_api"] != int64(3) {
		t.Errorf("failed GetVersion lacks geni_api: %#v", resp)
	}

	fake.err, fake.panic = nil, true
	resp = callDirect(t, h, alice, "Status", []any{sliceURN}, creds, map[string]any{})
	out = resp["output"].(string)
	if codeOf(t, resp) != int64(am.ServerError) || !strings.HasPrefix(out, "internal error; log id ") {
		t.Errorf("panic reply %#v", resp)
	}
	if l := logs.String(); !strings.Contains(l, "fake aggregate exploded") || !strings.Contains(l, "log_id="+idOf(out)) {
		t.Errorf("panic not logged:\n%s", l)
	}
	fake.panic = false

	// A caller without a URN, or with no certificate, is refused in a return struct.
	noURN := *pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+x+authority+ca", KeyBits: 1024}).Cert
	noURN.URIs = nil
	resp = callDirect(t, h, &noURN, "GetVersion")
	if codeOf(t, resp) != int64(am.Forbidden) || !strings.Contains(resp["output"].(string), "has no GENI URN") {
		t.Errorf("no-URN reply %#v", resp)
	}
	resp = callDirect(t, h, nil, "GetVersion")
	if codeOf(t, resp) != int64(am.Forbidden) || !strings.Contains(resp["output"].(string), "client certificate is required") {
		t.Errorf("no-cert reply %#v", resp)
	}
}

func TestFaults(t *testing.T) {
	h := NewHandler(&fakeAM{}, HandlerOptions{MaxBodyBytes: 1000})
	alice := aliceCert(t).Cert
	fault := func(body string) *xmlrpc.Fault {
		t.Helper()
		_, err := serveDirect(h, alice, []byte(body))
		var f *xmlrpc.Fault
		if !errors.As(err, &f) {
			t.Fatalf("%.60s: got %v, want a fault", body, err)
		}
		return f
	}
	big := "<methodCall><methodName>GetVersion</methodName><params><param><value>" + strings.Repeat("x", 2000) + "</value></param></params></methodCall>"
	if f := fault(big); f.Code != FaultInvalidRequest || !strings.Contains(f.String, "exceeds the limit of 1000 bytes") {
		t.Errorf("body limit: %+v", f)
	}
	if f := fault("<methodCall><methodName>GetVersion</methodName>"); f.Code != FaultParse || !strings.Contains(f.String, "malformed XML-RPC call") {
		t.Errorf("malformed: %+v", f)
	}
	if f := fault(`<!DOCTYPE x [<!ENTITY a "a">]><methodCall><methodName>GetVersion</methodName></methodCall>`); f.Code != FaultParse || !strings.Contains(f.String, "DTD") {
		t.Errorf("DTD: %+v", f)
	}
	if f := fault("<methodCall><methodName>CreateSliver</methodName></methodCall>"); f.Code != FaultUnknownMethod || !strings.Contains(f.String, `unknown method "CreateSliver"`) {
		t.Errorf("unknown method: %+v", f)
	}
	if f := fault("<methodCall><methodName>getversion</methodName></methodCall>"); f.Code != FaultUnknownMethod {
		t.Errorf("method names are case-sensitive: %+v", f)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
}

// TestGetVersionAcceptance applies the checks of the acceptance test
// (am_api_accept.py test_GetVersion) and omni to our GetVersion reply.
func TestGetVersionAcceptance(t *testing.T) {
	h := NewHandler(&fakeAM{}, HandlerOptions{})
	alice := aliceCert(t).Cert
	for _, params := range [][]any{nil, {map[string]any{}}} {
		resp := callDirect(t, h, alice, "GetVersion", params...)
		checkGetVersion(t, resp)
	}
}

func checkGetVersion(t *testing.T, resp map[string]any) {
	t.Helper()
	if resp["geni_api"] != int64(3) {
		t.Errorf("top-level geni_api %#v, want int 3", resp["geni_api"])
	}
	code := resp["code"].(map[string]any)
	if code["geni_code"] != int64(0) || code["am_type"] != "geniam" || code["am_code"] != int64(0) {
		t.Errorf("code %#v", code)
	}
	if _, ok := resp["output"].(string); !ok {
		t.Errorf("output %#v", resp["output"])
	}
	v := resp["value"].(map[string]any)
	if v["geni_api"] != int64(3) {
		t.Errorf("value geni_api %#v", v["geni_api"])
	}
	if vs, ok := v["geni_api_versions"].(map[string]any); !ok || vs["3"] != "https://127.0.0.1:5001/" {
		t.Errorf("geni_api_versions %#v", v["geni_api_versions"])
	}
	for _, key := range []string{"geni_request_rspec_versions", "geni_ad_rspec_versions"} {
		list, ok := v[key].([]any)
		if !ok || len(list) == 0 {
			t.Fatalf("%s %#v", key, v[key])
		}
		for _, e := range list {
			rv := e.(map[string]any)
			for _, f := range []string{"type", "version", "schema", "namespace"} {
				if _, ok := rv[f].(string); !ok {
					t.Errorf("%s.%s %#v is not a string", key, f, rv[f])
				}
			}
			if ext, ok := rv["extensions"].([]any); !ok || len(ext) == 0 {
				t.Errorf("%s.extensions %#v is not an array", key, rv["extensions"])
			}
		}
	}
	sfa := false
	for _, e := range v["geni_credential_types"].([]any) {
		c := e.(map[string]any)
		if c["geni_type"] == "geni_sfa" && (c["geni_version"] == "3" || c["geni_version"] == "2") {
			sfa = true
		}
	}
	if !sfa {
		t.Errorf("no geni_sfa 2 or 3 in %#v", v["geni_credential_types"])
	}
	if sa, ok := v["geni_single_allocation"].(int64); !ok || sa != 0 {
		t.Errorf("geni_single_allocation %#v, want <int>0</int>", v["geni_single_allocation"])
	}
	if v["geni_allocate"] != "geni_many" || v["geni_am_type"] != "geniam" || v["geni_am_code"] != am.CodeVersion || v["urn"] != amURN {
		t.Errorf("identification %#v", v)
	}
	if v["geniam_extra"] != "x" {
		t.Errorf("Version.Extra lost: %#v", v)
	}
}

// TestURNsCanonical: the edge admits a URN whatever the case of its prefix
// and type (issue 15: URN:PUBLICID:IDN+ passed here, then got BADARGS "not a
// slice URN" in the aggregate), and hands am the canonical text, so slice
// lookups and credential targets compare equal. A name with '+' is one name.
func TestURNsCanonical(t *testing.T) {
	fake := &fakeAM{}
	h := NewHandler(fake, HandlerOptions{})
	alice := aliceCert(t)
	resp := callDirect(t, h, alice.Cert, "Status", []any{"URN:PUBLICID:IDN+example+SLICE+a+b"}, creds, map[string]any{})
	if codeOf(t, resp) != 0 {
		t.Fatalf("Status: %#v", resp)
	}
	if got := fake.last().urns; len(got) != 1 || got[0] != "urn:publicid:IDN+example+slice+a+b" {
		t.Errorf("Status got urns %q", got)
	}
	resp = callDirect(t, h, alice.Cert, "Shutdown", "URN:PUBLICID:IDN+example+slice+s1", creds, map[string]any{})
	if codeOf(t, resp) != 0 {
		t.Fatalf("Shutdown: %#v", resp)
	}
	if got := fake.last().slice; got != sliceURN {
		t.Errorf("Shutdown got slice %q, want %q", got, sliceURN)
	}
}
