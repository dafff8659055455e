package xmlrpc

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// scanTokens lists what the scanner makes of doc, one line a token (text
// runs joined), or the error.
func scanTokens(doc []byte) (string, error) {
	s := scanner{data: bytes.TrimPrefix(doc, []byte("\ufeff")), maxTag: 1 << 30, maxText: 1 << 30}
	var out strings.Builder
	var text []byte
	flush := func() {
		if len(text) > 0 {
			out.WriteString("text " + string(text) + "\n")
			text = nil
		}
	}
	for {
		tok, err := s.next()
		if err == io.EOF {
			flush()
			return out.String(), nil
		}
		if err != nil {
			return "", err
		}
		switch tok.kind {
		case tokText:
			text = append(text, tok.text...)
		case tokStart:
			flush()
			out.WriteString("<" + tok.name + "\n")
		case tokEnd:
			flush()
			out.WriteString("</" + tok.name + "\n")
		}
	}
}

// stdTokens does the same with encoding/xml, strict and without entities,
// as the decoder used it before it had a scanner of its own.
func stdTokens(doc []byte) (string, error) {
	d := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(doc, []byte("\ufeff"))))
	d.Strict, d.Entity, d.AutoClose = true, nil, nil
	d.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(label) {
		case "us-ascii", "ascii", "utf8":
			return r, nil
		}
		return nil, errCharset
	}
	var out strings.Builder
	var text []byte
	flush := func() {
		if len(text) > 0 {
			out.WriteString("text " + string(text) + "\n")
			text = nil
		}
	}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			flush()
			return out.String(), nil
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			text = append(text, t...)
		case xml.StartElement:
			flush()
			out.WriteString("<" + t.Name.Local + "\n")
		case xml.EndElement:
			flush()
			out.WriteString("</" + t.Name.Local + "\n")
		case xml.Directive:
			return "", errCharset // refused by the decoder, as by the scanner
		}
	}
}

// FuzzScanMatchesEncodingXML holds the scanner to encoding/xml: both accept
// the same documents and read the same elements and text from them. Where
// they part on purpose (the scanner refuses every <!...> declaration; it
// checks non-ASCII names against XML 1.0's fifth edition rather than
// Unicode's letter classes), the input is left out.
func FuzzScanMatchesEncodingXML(f *testing.F) {
	for _, s := range []string{
		`<?xml version="1.0" encoding="UTF-8"?><methodCall><methodName>m</methodName></methodCall>`,
		`<a x="1" y='&lt;'>t&amp;&#60;&#x3e;<![CDATA[<&>]]><!-- c --><?pi x?></a>`,
		"<a>\r\n\r</a>", `<ex:nil xmlns:ex="u"/>`, `<a></b>`, `</a>`, `<a>&bogus;</a>`, `<a>&#0;</a>`, "<a>\x01</a>",
		"<a>\xff</a>", `<a b></a>`, `<a b=c></a>`, `<a b="<"></a>`, `<1a/>`, `<a/ >`, `<?xml version="2.0"?><a/>`,
		`<?xml encoding="latin1"?><a/>`, `<a>]]></a>`, `<a><!--</a>`, `<a><![CDATA[x</a>`, `<a>&amp</a>`, `<a>&#xZ;</a>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if bytes.Contains(doc, []byte("<!")) && !bytes.Contains(doc, []byte("<!--")) && !bytes.Contains(doc, []byte("<![CDATA[")) {
			return
		}
		for _, c := range doc {
			if c >= 0x80 {
				return
			}
		}
		ours, oerr := scanTokens(doc)
		theirs, terr := stdTokens(doc)
		if (oerr == nil) != (terr == nil) {
			t.Fatalf("%q: scanner: %v; encoding/xml: %v", doc, oerr, terr)
		}
		if ours != theirs {
			t.Fatalf("%q:\nscanner:\n%s\nencoding/xml:\n%s", doc, ours, theirs)
		}
	})
}
