package xmlrpc

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// callOf wraps one <value> body in a methodCall.
func callOf(value string) string {
	return "<?xml version='1.0'?>\n<methodCall><methodName>m</methodName><params><param><value>" +
		value + "</value></param></params></methodCall>"
}

// readTestdata returns testdata/name: a GetVersion call and answer as
// real clients and aggregates send them.
func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func decodeOne(t *testing.T, value string) any {
	t.Helper()
	c, err := DecodeCall(strings.NewReader(callOf(value)), Limits{})
	if err != nil {
		t.Fatalf("DecodeCall(%q): %v", value, err)
	}
	if len(c.Params) != 1 {
		t.Fatalf("got %d params", len(c.Params))
	}
	return c.Params[0]
}

func TestDecodeTypes(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	cases := []struct {
		name, xml string
		want      any
	}{
		{"string", "<string>hello</string>", "hello"},
		{"string keeps spaces", "<string>  a b \n</string>", "  a b \n"},
		{"untyped", "hello", "hello"},
		{"untyped keeps spaces", "  hello  ", "  hello  "},
		{"empty value", "", ""},
		{"empty string", "<string></string>", ""},
		{"self-closed string", "<string/>", ""},
		{"entities", "<string>a&lt;b&amp;c&gt;&quot;&apos;&#65;&#x42;</string>", `a<b&c>"'AB`},
		{"CDATA", "<string>a<![CDATA[ <cdata> & ]]>b</string>", "a <cdata> & b"},
		{"untyped CDATA", "<![CDATA[<x>]]>", "<x>"},
		{"CRLF by reference", "<string>a&#xD;&#xA;b</string>", "a\r\nb"},
		{"unicode", "<string>héllo ☃</string>", "héllo ☃"},
		{"int", "<int>42</int>", int64(42)},
		{"int spaces", "<int> -7 </int>", int64(-7)},
		{"i4", "<i4>2147483647</i4>", int64(2147483647)},
		{"i8", "<i8>1099511627776</i8>", int64(1099511627776)},
		{"int over 32 bits", "<int>-1099511627776</int>", int64(-1099511627776)},
		{"boolean true", "<boolean>1</boolean>", true},
		{"boolean false", "<boolean>0</boolean>", false},
		{"double", "<double>-1.5</double>", -1.5},
		{"double int form", "<double>3</double>", 3.0},
		{"base64", "<base64>aGk=</base64>", []byte("hi")},
		{"base64 python newlines", "<base64>\naGk=\n</base64>", []byte("hi")},
		{"base64 unpadded", "<base64>aGk</base64>", []byte("hi")},
		{"base64 empty", "<base64></base64>", []byte{}},
		{"dateTime spec form", "<dateTime.iso8601>19980717T14:08:55</dateTime.iso8601>", utc("1998-07-17T14:08:55Z")},
		{"dateTime Z", "<dateTime.iso8601>20260101T00:00:00Z</dateTime.iso8601>", utc("2026-01-01T00:00:00Z")},
		{"dateTime +01:00", "<dateTime.iso8601>20260101T01:00:00+01:00</dateTime.iso8601>", utc("2026-01-01T00:00:00Z")},
		{"dateTime +0100", "<dateTime.iso8601>20260101T01:00:00+0100</dateTime.iso8601>", utc("2026-01-01T00:00:00Z")},
		{"dateTime basic", "<dateTime.iso8601>20260101T010000</dateTime.iso8601>", utc("2026-01-01T01:00:00Z")},
		{"dateTime extended", "<dateTime.iso8601>2026-01-01T01:00:00</dateTime.iso8601>", utc("2026-01-01T01:00:00Z")},
		{"dateTime fraction", "<dateTime.iso8601>2026-01-01T01:00:00.25Z</dateTime.iso8601>", utc("2026-01-01T01:00:00.25Z")},
		{"nil", "<nil/>", nil},
		{"ex:nil", `<ex:nil xmlns:ex="http://ws.apache.org/xmlrpc/namespaces/extensions"/>`, nil},
		{"ex:nil undeclared", `<ex:nil/>`, nil},
		{"struct", "<struct><member><name>a</name><value><int>1</int></value></member>" +
			"<member><name>b</name><value>x</value></member></struct>", map[string]any{"a": int64(1), "b": "x"}},
		{"struct empty member then more", "<struct><member><name>a</name><value/></member>" +
			"<member><name>b</name><value><int>2</int></value></member></struct>", map[string]any{"a": "", "b": int64(2)}},
		{"struct escaped name", "<struct><member><name>x&lt;&amp;y</name><value>1</value></member></struct>", map[string]any{"x<&y": "1"}},
		{"struct empty name", "<struct><member><name></name><value>1</value></member></struct>", map[string]any{"": "1"}},
		{"struct repeated name", "<struct><member><name>a</name><value>1</value></member><member><name>a</name><value>2</value></member></struct>", map[string]any{"a": "2"}},
		{"empty struct", "<struct>\n</struct>", map[string]any{}},
		{"array", "<array><data><value><int>1</int></value><value/><value>s</value><value><int>2</int></value></data></array>",
			[]any{int64(1), "", "s", int64(2)}},
		{"empty array", "<array><data>\n</data></array>", []any{}},
		{"array without data", "<array/>", []any{}},
		{"nested", "<array><data><value><struct><member><name>k</name><value><array><data><value><boolean>1</boolean></value></data></array></value></member></struct></value></data></array>",
			[]any{map[string]any{"k": []any{true}}}},
		{"whitespace around type", "\n  <int>5</int>\n  ", int64(5)},
		{"comment", "<!-- hi --><int>5</int>", int64(5)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := decodeOne(t, c.xml)
			if !equalValues(got, c.want) {
				t.Errorf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

// equalValues is DeepEqual with times compared as instants.
func equalValues(a, b any) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC()
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = normalize(x[i])
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	}
	return v
}

func TestDecodeCallShapes(t *testing.T) {
	c, err := DecodeCall(bytes.NewReader(readTestdata(t, "getversion-request.xml")), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != "GetVersion" || !reflect.DeepEqual(c.Params, []any{map[string]any{}}) {
		t.Errorf("omni sample: got %+v", c)
	}
	for _, doc := range []string{
		"<methodCall><methodName>GetVersion</methodName></methodCall>",
		"<methodCall><methodName>GetVersion</methodName><params/></methodCall>",
		`<?xml version="1.0" encoding="UTF-8"?><methodCall><methodName> GetVersion </methodName><params></params></methodCall>` + "\n\n",
	} {
		c, err := DecodeCall(strings.NewReader(doc), Limits{})
		if err != nil {
			t.Errorf("%s: %v", doc, err)
			continue
		}
		if c.Method != "GetVersion" || c.Params == nil || len(c.Params) != 0 {
			t.Errorf("%s: got %+v", doc, c)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	deep := strings.Repeat("<value><array><data>", 65) + strings.Repeat("</data></array></value>", 65)
	deepCall := "<methodCall><methodName>m</methodName><params><param>" + deep + "</param></params></methodCall>"
	cases := []struct {
		name, doc string
		lim       Limits
		want      string // substring of the error
	}{
		{"empty", "", Limits{}, "unexpected end"},
		{"not xml", "hello", Limits{}, "unexpected text"},
		{"wrong root", "<methodResponse/>", Limits{}, "want <methodCall>"},
		{"no method name", "<methodCall><params/></methodCall>", Limits{}, "want <methodName>"},
		{"empty method name", "<methodCall><methodName> </methodName></methodCall>", Limits{}, "empty methodName"},
		{"element in method name", "<methodCall><methodName><b/></methodName></methodCall>", Limits{}, "unexpected <b> in <methodName>"},
		{"unclosed", "<methodCall><methodName>m</methodName>", Limits{}, "unexpected EOF"},
		{"mismatched", "<methodCall><methodName>m</methodX></methodCall>", Limits{}, "methodX"},
		{"trailing element", "<methodCall><methodName>m</methodName></methodCall><x/>", Limits{}, "after the document"},
		{"trailing text", "<methodCall><methodName>m</methodName></methodCall>junk", Limits{}, "after the document"},
		{"doctype", `<!DOCTYPE methodCall><methodCall><methodName>m</methodName></methodCall>`, Limits{}, "DTD"},
		{"billion laughs", `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>` +
			`<methodCall><methodName>&lol2;</methodName></methodCall>`, Limits{}, "DTD"},
		{"undefined entity", callOf("<string>&lol;</string>"), Limits{}, "entity"},
		{"external entity", callOf("<string>&xxe;</string>"), Limits{}, "entity"},
		{"bad char ref", callOf("<string>&#0;</string>"), Limits{}, "character"},
		{"unknown type", callOf("<float>1</float>"), Limits{}, "unknown value type <float>"},
		{"bad int", callOf("<int>1x</int>"), Limits{}, "bad <int>"},
		{"int overflow", callOf("<i8>9223372036854775808</i8>"), Limits{}, "bad <i8>"},
		{"bad boolean", callOf("<boolean>yes</boolean>"), Limits{}, "bad <boolean>"},
		{"bad double", callOf("<double>x</double>"), Limits{}, "bad <double>"},
		{"NaN double", callOf("<double>NaN</double>"), Limits{}, "bad <double>"},
		{"bad base64", callOf("<base64>!!!</base64>"), Limits{}, "bad <base64>"},
		{"bad date", callOf("<dateTime.iso8601>yesterday</dateTime.iso8601>"), Limits{}, "bad <dateTime.iso8601>"},
		{"text before type", callOf("x<int>1</int>"), Limits{}, "before <int>"},
		{"text after type", callOf("<int>1</int>x"), Limits{}, "unexpected text"},
		{"two types", callOf("<int>1</int><int>2</int>"), Limits{}, "want </value>"},
		{"element in string", callOf("<string>a<b/>c</string>"), Limits{}, "unexpected <b> in <string>"},
		{"nil with content", callOf("<nil>x</nil>"), Limits{}, "<nil> with content"},
		{"member without value", callOf("<struct><member><name>a</name></member></struct>"), Limits{}, `member "a"`},
		{"member without name", callOf("<struct><member><value>1</value></member></struct>"), Limits{}, "want <name>"},
		{"stray in struct", callOf("<struct><x/></struct>"), Limits{}, "want <member>"},
		{"stray in array", callOf("<array><data><x/></data></array>"), Limits{}, "want <value>"},
		{"array without data element", callOf("<array><value>1</value></array>"), Limits{}, "want <data>"},
		{"param without value", "<methodCall><methodName>m</methodName><params><param></param></params></methodCall>", Limits{}, "want <value>"},
		{"depth", deepCall, Limits{}, "nesting deeper than the limit of 64"},
		{"depth custom", callOf("<array><data><value><array><data></data></array></value></data></array>"), Limits{MaxDepth: 1}, "limit of 1"},
		{"values", callOf("<array><data><value/><value/><value/></data></array>"), Limits{MaxValues: 3}, "limit of 3 values"},
		{"string length", callOf("<string>12345</string>"), Limits{MaxStringLen: 4}, "limit of 4 bytes"},
		{"untyped length", callOf("12345"), Limits{MaxStringLen: 4}, "limit of 4 bytes"},
		{"escaped length", callOf("<string>&lt;&lt;&lt;&lt;&lt;</string>"), Limits{MaxStringLen: 4}, "limit of 4 bytes"},
		{"escaped length in pieces", callOf("<string>&lt;&lt;<![CDATA[<<]]>&lt;</string>"), Limits{MaxStringLen: 4}, "limit of 4 bytes"},
		{"name length", callOf("<struct><member><name>12345</name><value/></member></struct>"), Limits{MaxStringLen: 4}, "limit of 4 bytes"},
		{"latin1", `<?xml version="1.0" encoding="ISO-8859-1"?><methodCall><methodName>m</methodName></methodCall>`, Limits{}, "encoding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeCall(strings.NewReader(c.doc), c.lim)
			if err == nil {
				t.Fatalf("no error")
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Errorf("error %T (%v) is not a *SyntaxError", err, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

type sliver struct {
	URN     string    `xmlrpc:"geni_sliver_urn"`
	Expires time.Time `xmlrpc:"geni_expires"`
	Error   string    `xmlrpc:"geni_error,omitempty"`
	Skip    string    `xmlrpc:"-"`
	Plain   int
	//lint:ignore U1000 the encoder must pass over unexported fields; this one is here to be passed over
	private int
}

func TestEncodeValues(t *testing.T) {
	var nilMap map[string]any
	var nilPtr *int
	one := 1
	cases := []struct {
		name string
		v    any
		want string
	}{
		{"string", "a<b&c>\"'", "<string>a&lt;b&amp;c&gt;\"'</string>"},
		{"newlines", "a\r\nb\tc", "<string>a&#xD;\nb\tc</string>"},
		{"invalid char", "a\x00b", "<string>a\uFFFDb</string>"},
		{"invalid UTF-8 and non-characters", "a\xffb\uFFFEc\U0001F600]]>", "<string>a\uFFFDb\uFFFDc\U0001F600]]&gt;</string>"},
		{"int", 42, "<int>42</int>"},
		{"int64 small", int64(-3), "<int>-3</int>"},
		{"int64 big", int64(1) << 40, "<i8>1099511627776</i8>"},
		{"uint64", uint64(7), "<int>7</int>"},
		{"bool", true, "<boolean>1</boolean>"},
		{"false", false, "<boolean>0</boolean>"},
		{"double", 1.5, "<double>1.5</double>"},
		{"big double", 1e21, "<double>1000000000000000000000</double>"},
		{"bytes", []byte("hi"), "<base64>aGk=</base64>"},
		{"time to UTC", time.Date(2026, 1, 1, 12, 0, 0, 0, time.FixedZone("x", 3600)), "<dateTime.iso8601>20260101T11:00:00</dateTime.iso8601>"},
		{"nil", nil, "<nil/>"},
		{"nil pointer", nilPtr, "<nil/>"},
		{"pointer", &one, "<int>1</int>"},
		{"nil map", nilMap, "<struct></struct>"},
		{"nil slice", []string(nil), "<array><data></data></array>"},
		{"sorted keys, escaped names", map[string]any{"b": 1, "a<&": "x"},
			"<struct><member><name>a&lt;&amp;</name><value><string>x</string></value></member><member><name>b</name><value><int>1</int></value></member></struct>"},
		{"array", []any{1, "x", []int{2}}, "<array><data><value><int>1</int></value><value><string>x</string></value><value><array><data><value><int>2</int></value></data></array></value></data></array>"},
		{"struct tags", sliver{URN: "u", Expires: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Skip: "no", Plain: 2},
			"<struct><member><name>geni_sliver_urn</name><value><string>u</string></value></member><member><name>geni_expires</name><value><dateTime.iso8601>20260101T00:00:00</dateTime.iso8601></value></member><member><name>Plain</name><value><int>2</int></value></member></struct>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Marshal(c.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	for _, bad := range []any{math.NaN(), math.Inf(1), uint64(math.MaxUint64), map[int]string{1: "x"}, make(chan int), func() {}} {
		if _, err := Marshal(bad); err == nil {
			t.Errorf("Marshal(%T %v): no error", bad, bad)
		}
	}
	var buf bytes.Buffer
	if err := EncodeResponse(&buf, []any{make(chan int)}); err == nil || buf.Len() != 0 {
		t.Errorf("EncodeResponse of a channel: err %v, wrote %d bytes", err, buf.Len())
	}
	type cyclic struct{ Next *cyclic }
	c := &cyclic{}
	c.Next = c
	if _, err := Marshal(c); err == nil {
		t.Error("cyclic value encoded")
	}
}

func TestRoundTrip(t *testing.T) {
	when := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	v := map[string]any{
		"string":  "  spaced \r\n text <&> ",
		"empty":   "",
		"int":     int64(-5),
		"big":     int64(1) << 50,
		"bool":    true,
		"double":  2.25,
		"bytes":   []byte{0, 1, 2, 255},
		"time":    when,
		"nil":     nil,
		"array":   []any{"a", int64(1), []any{}, map[string]any{}},
		"nested":  map[string]any{"k<": map[string]any{"": "x"}},
		"unicode": "日本 ☃",
	}
	var buf bytes.Buffer
	if err := EncodeResponse(&buf, v); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeResponse(&buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !equalValues(got, v) {
		t.Errorf("round trip:\n got %#v\nwant %#v", got, v)
	}

	buf.Reset()
	if err := EncodeCall(&buf, "Allocate", "urn:x", []any{}, "<rspec/>", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCall(&buf, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Method != "Allocate" || !equalValues(c.Params, []any{"urn:x", []any{}, "<rspec/>", map[string]any{}}) {
		t.Errorf("call round trip: %#v", c)
	}
}

func TestFault(t *testing.T) {
	var buf bytes.Buffer
	if err := EncodeFault(&buf, -32700, `bad <args> & "stuff"`); err != nil {
		t.Fatal(err)
	}
	_, err := DecodeResponse(&buf, Limits{})
	var f *Fault
	if !errors.As(err, &f) || f.Code != -32700 || f.String != `bad <args> & "stuff"` {
		t.Errorf("got %v", err)
	}
	for _, doc := range []string{
		"<methodResponse><fault><value><int>1</int></value></fault></methodResponse>",
		"<methodResponse><fault><value><struct><member><name>faultCode</name><value>x</value></member></struct></value></fault></methodResponse>",
		"<methodResponse><params></params></methodResponse>",
		"<methodResponse></methodResponse>",
	} {
		if _, err := DecodeResponse(strings.NewReader(doc), Limits{}); err == nil || errors.As(err, &f) {
			t.Errorf("%s: got %v, want a syntax error", doc, err)
		}
	}
}

func TestDecodeSampleResponse(t *testing.T) {
	v, err := DecodeResponse(bytes.NewReader(readTestdata(t, "getversion-response.xml")), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m := v.(map[string]any)
	if m["geni_api"] != int64(3) || m["value"].(map[string]any)["geni_api_versions"].(map[string]any)["3"] != "https://127.0.0.1:8001/" {
		t.Errorf("got %#v", m)
	}
}

func TestParseDateTime(t *testing.T) {
	for _, s := range []string{"20260101T00:00:00", "20260101T000000Z", "2026-01-01T01:00:00+01:00", "2026-01-01T01:00:00.5+0100", "20251231T19:00:00-05:00"} {
		tm, err := ParseDateTime(s)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if d := tm.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); d < 0 || d >= time.Second {
			t.Errorf("%s: got %v", s, tm)
		}
	}
}

func BenchmarkDecodeCall(b *testing.B) {
	var buf bytes.Buffer
	creds := []any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": strings.Repeat("<credential/>", 500)}}
	opts := map[string]any{"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}, "geni_compressed": true}
	if err := EncodeCall(&buf, "ListResources", creds, opts); err != nil {
		b.Fatal(err)
	}
	doc := buf.Bytes()
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := DecodeCall(bytes.NewReader(doc), Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
