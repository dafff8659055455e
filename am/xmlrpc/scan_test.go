package xmlrpc

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// tokenList writes tokens one a line (runs of text joined), so that two
// tokenizers can be compared.
type tokenList struct {
	out  strings.Builder
	text []byte
}

func (l *tokenList) add(kind tokenKind, name string, text []byte) {
	if kind == tokText {
		l.text = append(l.text, text...)
		return
	}
	l.flush()
	if kind == tokStart {
		l.out.WriteString("<" + name + "\n")
	} else {
		l.out.WriteString("</" + name + "\n")
	}
}

func (l *tokenList) flush() {
	if len(l.text) > 0 {
		l.out.WriteString("text " + string(l.text) + "\n")
		l.text = nil
	}
}

func (l *tokenList) String() string { l.flush(); return l.out.String() }

// scanTokens lists what the scanner makes of doc, or the error.
func scanTokens(doc []byte) (string, error) {
	s := scanner{data: bytes.TrimPrefix(doc, []byte("\ufeff")), maxTag: 1 << 30, maxText: 1 << 30}
	var l tokenList
	for {
		tok, err := s.next()
		if err == io.EOF {
			return l.String(), nil
		}
		if err != nil {
			return "", err
		}
		l.add(tok.kind, tok.name, tok.text)
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
	var l tokenList
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return l.String(), nil
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			l.add(tokText, "", t)
		case xml.StartElement:
			l.add(tokStart, t.Name.Local, nil)
		case xml.EndElement:
			l.add(tokEnd, t.Name.Local, nil)
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
