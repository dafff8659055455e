package credentials

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/beevik/etree"
)

// MaxCredentialSize bounds a credential document. Real ones are 7 to 30 KB;
// a deeply delegated one with long chains stays well under this.
const MaxCredentialSize = 1 << 20

// maxDepth bounds element nesting (a credential is about 6 deep plus 2 per
// delegation).
const maxDepth = 64

// document is a parsed XML document that keeps the bytes it came from and an
// index of its xml:id attributes.
type document struct {
	raw []byte
	doc *etree.Document
	ids map[string]*etree.Element
}

// parseDocument parses an untrusted document safely: bounded size and depth,
// no DTD (so no entity expansion and no DTD-declared IDs), no duplicate
// attributes, and no xml:id used twice (a signature wrapping attack would
// otherwise let a reference resolve to a different element than the one the
// verifier reads).
func parseDocument(raw []byte) (*document, error) {
	if len(raw) == 0 {
		return nil, errors.New("empty document")
	}
	if len(raw) > MaxCredentialSize {
		return nil, fmt.Errorf("document is %d bytes, more than the %d allowed", len(raw), MaxCredentialSize)
	}
	if bytes.Contains(raw, []byte("<!DOCTYPE")) || bytes.Contains(raw, []byte("<!ENTITY")) {
		return nil, errors.New("DOCTYPE and entity declarations are not allowed")
	}
	doc := etree.NewDocument()
	doc.ReadSettings = etree.ReadSettings{
		PreserveDuplicateAttrs: true,
		MaxDepth:               maxDepth,
		CharsetReader:          utf8Only,
	}
	if err := doc.ReadFromBytes(normalizeAttrWhitespace(raw)); err != nil {
		return nil, fmt.Errorf("malformed XML: %v", err)
	}
	if doc.Root() == nil {
		return nil, errors.New("malformed XML: no root element")
	}
	d := &document{raw: raw, doc: doc, ids: map[string]*etree.Element{}}
	for _, tok := range doc.Child {
		if _, ok := tok.(*etree.Directive); ok {
			return nil, errors.New("DOCTYPE and other directives are not allowed")
		}
	}
	if err := d.index(doc.Root()); err != nil {
		return nil, err
	}
	return d, nil
}

func utf8Only(charset string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return r, nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", charset)
}

// index records every xml:id below and including el.
func (d *document) index(el *etree.Element) error {
	stack := []*etree.Element{el}
	for len(stack) > 0 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for i, a := range e.Attr {
			for _, b := range e.Attr[:i] {
				if a.Space == b.Space && a.Key == b.Key {
					return fmt.Errorf("element <%s> has attribute %s twice", e.FullTag(), a.FullKey())
				}
			}
			if a.Space == "xml" && a.Key == "id" {
				if _, dup := d.ids[a.Value]; dup {
					return fmt.Errorf("xml:id %q appears twice", a.Value)
				}
				d.ids[a.Value] = e
			}
		}
		for _, tok := range e.Child {
			switch t := tok.(type) {
			case *etree.Element:
				stack = append(stack, t)
			case *etree.Directive:
				return errors.New("directives are not allowed inside elements")
			}
		}
	}
	return nil
}

// normalizeAttrWhitespace applies XML attribute-value normalization to
// literal tab, CR and LF inside attribute values (each becomes a space; CRLF
// one space). encoding/xml does not do it, and C14N must see the normalized
// value: a literal newline in an attribute canonicalizes as a space, while a
// &#10; reference stays a newline. The input is returned unchanged (no copy)
// when there is nothing to normalize, which is the case for every real
// credential.
func normalizeAttrWhitespace(raw []byte) []byte {
	var out []byte // allocated on the first change
	done := 0      // raw[:done] has been copied to out
	inTag, quote := false, byte(0)
	for i := 0; i < len(raw); i++ {
		b := raw[i]
		switch {
		case quote != 0:
			if b == quote {
				quote = 0
			} else if b == '\t' || b == '\n' || b == '\r' {
				if out == nil {
					out = make([]byte, 0, len(raw))
				}
				out = append(out, raw[done:i]...)
				if b != '\n' || i == 0 || raw[i-1] != '\r' { // CRLF: the CR already became the space
					out = append(out, ' ')
				}
				done = i + 1
			}
		case inTag:
			if b == '"' || b == '\'' {
				quote = b
			} else if b == '>' {
				inTag = false
			}
		case b == '<':
			rest := raw[i:]
			switch {
			case bytes.HasPrefix(rest, []byte("<!--")):
				i = skipTo(raw, i+4, "-->")
			case bytes.HasPrefix(rest, []byte("<![CDATA[")):
				i = skipTo(raw, i+9, "]]>")
			case bytes.HasPrefix(rest, []byte("<?")):
				i = skipTo(raw, i+2, "?>")
			case bytes.HasPrefix(rest, []byte("<!")):
				i = skipTo(raw, i+2, ">")
			default:
				inTag = true
			}
		}
	}
	if out == nil {
		return raw
	}
	return append(out, raw[done:]...)
}

// skipTo returns the index of the last byte of the first end marker at or
// after i (or the last index of raw).
func skipTo(raw []byte, i int, end string) int {
	if i >= len(raw) {
		return len(raw) - 1
	}
	j := bytes.Index(raw[i:], []byte(end))
	if j < 0 {
		return len(raw) - 1
	}
	return i + j + len(end) - 1
}
