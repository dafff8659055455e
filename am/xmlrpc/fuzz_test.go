package xmlrpc

import (
	"bytes"
	"testing"
)

// FuzzDecodeCall feeds arbitrary documents to DecodeCall. Whatever it accepts
// must encode again and decode to the same values.
func FuzzDecodeCall(f *testing.F) {
	f.Add(readTestdata(f, "getversion-request.xml"))
	for _, v := range []string{
		"<string>a&lt;b</string>", "plain", "", "<int>1</int>", "<i8>-9</i8>", "<boolean>1</boolean>",
		"<double>1.5</double>", "<base64>aGk=</base64>", "<dateTime.iso8601>20260101T01:00:00+0100</dateTime.iso8601>",
		"<nil/>", "<struct><member><name>a</name><value/></member></struct>",
		"<array><data><value><array><data><value>x</value></data></array></value></data></array>",
		"<string><![CDATA[<x>]]></string>",
	} {
		f.Add([]byte(callOf(v)))
	}
	var buf bytes.Buffer
	_ = EncodeCall(&buf, "ListResources",
		[]any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "<credential/>"}},
		map[string]any{"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}, "geni_compressed": true})
	f.Add(buf.Bytes())
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY a "aaaa">]><methodCall><methodName>&a;</methodName></methodCall>`))

	lim := Limits{MaxDepth: 20, MaxValues: 1000, MaxStringLen: 1 << 16}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := DecodeCall(bytes.NewReader(doc), lim)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := EncodeCall(&out, c.Method, c.Params...); err != nil {
			t.Fatalf("re-encoding %#v: %v", c, err)
		}
		c2, err := DecodeCall(&out, Limits{})
		if err != nil {
			t.Fatalf("decoding our own encoding: %v\n%s", err, out.Bytes())
		}
		if c2.Method != c.Method || !equalValues(c2.Params, c.Params) {
			t.Fatalf("round trip changed the call:\n%#v\n%#v", c, c2)
		}
	})
}
