package geniapi

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/xmlrpc"
)

// FuzzServeCall sends arbitrary bodies through the whole handler: decoding,
// argument and option checks, dispatch to the fake aggregate and encoding.
// Nothing may panic (the handler would turn a panic into SERVERERROR, so the
// log is checked) and every reply must decode.
func FuzzServeCall(f *testing.F) {
	seeds := [][]any{
		{"GetVersion"},
		{"GetVersion", map[string]any{}},
		{"ListResources", creds, map[string]any{"geni_rspec_version": rspecV3, "geni_compressed": true, "geni_available": true}},
		{"Describe", []any{sliceURN}, creds, map[string]any{"geni_rspec_version": rspecV3}},
		{"Allocate", sliceURN, creds, "<rspec/>", map[string]any{"geni_end_time": "2026-11-22T12:00:00Z", "geni_start_time": "2026-11-22T11:00:00"}},
		{"Renew", []any{sliver1, sliver2}, creds, "2026-11-23T00:00:00+00:00", map[string]any{"geni_extend_alap": true}},
		{"Provision", []any{sliceURN}, []any{"bare"}, map[string]any{"geni_rspec_version": rspecV3,
			"geni_users": []any{map[string]any{"urn": aliceURN, "keys": []any{"k"}}}, "geni_speaking_for": aliceURN}},
		{"Status", []any{sliver1}, creds, map[string]any{}},
		{"PerformOperationalAction", []any{sliver1}, creds, "geni_start", map[string]any{"geni_best_effort": false}},
		{"Delete", []any{sliceURN}, creds, map[string]any{}},
		{"Shutdown", sliceURN, creds, map[string]any{}},
	}
	for _, s := range seeds {
		var b bytes.Buffer
		if err := xmlrpc.EncodeCall(&b, s[0].(string), s[1:]...); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	log, logs := newLogger()
	h := NewHandler(&fakeAM{}, HandlerOptions{Logger: log, MaxBodyBytes: 1 << 16})
	alice := aliceCert(f).Cert
	f.Fuzz(func(t *testing.T, body []byte) {
		logs.Reset()
		if _, err := serveDirect(h, alice, body); err != nil {
			if _, ok := err.(*xmlrpc.Fault); !ok {
				t.Fatalf("reply does not decode: %v", err)
			}
		}
		if l := logs.String(); strings.Contains(l, "panic") || strings.Contains(l, "cannot encode") {
			t.Fatalf("handler failed on %q:\n%s", body, l)
		}
	})
}

// FuzzParseTime: any accepted time formats back to an RFC 3339 string that
// parses to the same second.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2026-11-22T12:00:00Z", "2026-11-22T12:00:00", "2026-11-22 12:00:00+00:00", "2026-11-22T12:00:00.123456-0500", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTime(s)
		if err != nil {
			return
		}
		back, err := ParseTime(FormatTime(tm))
		if err != nil || !back.Equal(tm.Truncate(time.Second)) {
			t.Fatalf("%q → %v → %q → %v, %v", s, tm, FormatTime(tm), back, err)
		}
	})
}
