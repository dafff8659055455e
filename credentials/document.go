package credentials

import (
	"bytes"
	"errors"
	"fmt"

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
	doc, err := parseXML(raw)
	if err != nil {
		return nil, fmt.Errorf("malformed XML: %v", err)
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
