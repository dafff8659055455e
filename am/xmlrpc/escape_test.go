package xmlrpc

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
)

// What escape writes reads back, through encoding/xml, as the text it was
// given (characters XML cannot carry as U+FFFD), whitespace and CRLF included.
func TestEscapeReadsBack(t *testing.T) {
	cases := map[string]string{
		"plain":        "plain",
		"markup":       `<rspec type="advertisement"><node a='1'/></rspec>`,
		"entities":     "&amp; &lt; ]]> &",
		"whitespace":   "a\r\nb\rc\nd\te  ",
		"unicode":      "日本 ☃ \U0001F600",
		"controls":     "a\x00b\x1fc\x7fd",
		"bad UTF-8":    "a\xffb\xc3",
		"noncharacter": "a\uFFFEb\uFFFFc",
	}
	for name, in := range cases {
		var b bytes.Buffer
		b.WriteString("<s>")
		escape(&b, in)
		b.WriteString("</s>")
		var out struct {
			Text string `xml:",chardata"`
		}
		if err := xml.Unmarshal(b.Bytes(), &out); err != nil {
			t.Errorf("%s: %q does not parse: %v", name, b.String(), err)
			continue
		}
		want := strings.Map(func(r rune) rune {
			if !xmlChar(r) {
				return '\uFFFD'
			}
			return r
		}, strings.ToValidUTF8(in, "\uFFFD"))
		if out.Text != want {
			t.Errorf("%s: %q read back as %q, want %q", name, b.String(), out.Text, want)
		}
	}
}

// BenchmarkEncodeAdvertisement: the XML-RPC response of ListResources on a
// 1,000-node inventory (about 370 kB of RSpec).
func BenchmarkEncodeAdvertisement(b *testing.B) {
	node := `  <node component_id="urn:publicid:IDN+geniam.localhost+node+bench0001" component_manager_id="urn:publicid:IDN+geniam.localhost+authority+am" component_name="bench0001" exclusive="false">
    <hardware_type name="bench-host"/>
    <sliver_type name="container"/>
    <available now="true"/>
  </node>
`
	ad := `<?xml version="1.0" encoding="UTF-8"?>` + "\n<rspec type=\"advertisement\">\n" + strings.Repeat(node, 1000) + "</rspec>\n"
	var buf bytes.Buffer
	b.SetBytes(int64(len(ad)))
	for b.Loop() {
		buf.Reset()
		if err := EncodeResponse(&buf, ad); err != nil {
			b.Fatal(err)
		}
	}
}
