package credentials

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/beevik/etree"
)

// Canonical XML (W3C C14N 1.0 and Exclusive C14N 1.0, both without comments)
// of one element *as it sits in its document*. GENI credentials are signed by
// xmlsec1 (libxml2), and the digest covers the referenced <credential> element
// together with the context its ancestors give it: the namespace declarations
// in scope (xmlns:xsi on <signed-credential>) and, for inclusive C14N, the
// inherited xml:* attributes. Serializing a detached copy would lose that
// context, which is why generic XML-DSig libraries fail on GENI credentials
// (research/go-deps.md §2).

const xmlNamespace = "http://www.w3.org/XML/1998/namespace"

// c14nMode selects the canonicalization algorithm.
type c14nMode struct {
	exclusive bool
	// inclusivePrefixes is the exc-c14n InclusiveNamespaces PrefixList: these
	// prefixes are treated as in inclusive C14N ("#default" is the default ns).
	inclusivePrefixes map[string]bool
}

// Canonicalize returns the inclusive C14N 1.0 form (without comments) of el,
// taking namespace declarations and xml:* attributes in scope from its
// ancestors.
func Canonicalize(el *etree.Element) ([]byte, error) {
	var buf bytes.Buffer
	err := canonicalize(&buf, el, nil, c14nMode{})
	return buf.Bytes(), err
}

// CanonicalizeExclusive returns the Exclusive C14N 1.0 form (without comments)
// of el; prefixes is the InclusiveNamespaces PrefixList (may be empty).
func CanonicalizeExclusive(el *etree.Element, prefixes []string) ([]byte, error) {
	var buf bytes.Buffer
	err := canonicalize(&buf, el, nil, exclusiveMode(prefixes))
	return buf.Bytes(), err
}

func exclusiveMode(prefixes []string) c14nMode {
	m := c14nMode{exclusive: true}
	if len(prefixes) > 0 {
		m.inclusivePrefixes = make(map[string]bool, len(prefixes))
		for _, p := range prefixes {
			if p == "#default" {
				p = ""
			}
			m.inclusivePrefixes[p] = true
		}
	}
	return m
}

// nsScope maps a prefix ("" for the default namespace) to its URI.
type nsScope map[string]string

// canonicalize writes the canonical form of apex to w. skip, when not nil, is
// an element left out of the output with its subtree (the enveloped
// signature transform).
func canonicalize(w *bytes.Buffer, apex *etree.Element, skip *etree.Element, mode c14nMode) error {
	// The namespaces in scope at the apex, built from the root down.
	var ancestors []*etree.Element
	for p := apex.Parent(); p != nil; p = p.Parent() {
		ancestors = append(ancestors, p)
	}
	scope := nsScope{}
	for i := len(ancestors) - 1; i >= 0; i-- {
		scope = withDeclarations(scope, ancestors[i])
	}
	c := canonicalizer{w: w, skip: skip, mode: mode}
	var inherited []etree.Attr
	if !mode.exclusive {
		inherited = inheritedXMLAttrs(apex, ancestors)
	}
	// At the apex nothing has been rendered yet: in inclusive mode every
	// namespace in scope is output there, in exclusive mode the utilized ones.
	return c.element(apex, scope, nsScope{}, inherited, true)
}

// withDeclarations returns scope extended by the xmlns declarations of el
// (scope itself when el declares nothing, so the common case allocates nothing).
func withDeclarations(scope nsScope, el *etree.Element) nsScope {
	var out nsScope
	for _, a := range el.Attr {
		prefix, ok := nsDeclPrefix(a)
		if !ok {
			continue
		}
		if out == nil {
			out = make(nsScope, len(scope)+2)
			for k, v := range scope {
				out[k] = v
			}
		}
		out[prefix] = a.Value
	}
	if out == nil {
		return scope
	}
	return out
}

// nsDeclPrefix reports whether a is a namespace declaration and for which
// prefix ("" for xmlns="...").
func nsDeclPrefix(a etree.Attr) (string, bool) {
	if a.Space == "xmlns" {
		return a.Key, true
	}
	if a.Space == "" && a.Key == "xmlns" {
		return "", true
	}
	return "", false
}

// inheritedXMLAttrs returns the xml:* attributes of the ancestors that apex
// lacks, nearest ancestor first winning (C14N 1.0 §2.4: the apex of a
// document subset inherits them).
func inheritedXMLAttrs(apex *etree.Element, ancestors []*etree.Element) []etree.Attr {
	var out []etree.Attr
	has := func(key string) bool {
		for _, a := range apex.Attr {
			if a.Space == "xml" && a.Key == key {
				return true
			}
		}
		for _, a := range out {
			if a.Key == key {
				return true
			}
		}
		return false
	}
	for _, anc := range ancestors { // nearest first
		for _, a := range anc.Attr {
			if a.Space == "xml" && !has(a.Key) {
				out = append(out, a)
			}
		}
	}
	return out
}

type canonicalizer struct {
	w    *bytes.Buffer
	skip *etree.Element
	mode c14nMode
}

type nsDecl struct{ prefix, uri string }

type sortAttr struct {
	uri, local, qname, value string
}

// element renders el. parentScope is the namespace context in scope at el's
// parent; rendered is what the output ancestors have rendered (identical to
// the scope in inclusive mode, since the apex renders everything).
func (c *canonicalizer) element(el *etree.Element, parentScope, rendered nsScope, extra []etree.Attr, apex bool) error {
	scope := withDeclarations(parentScope, el)

	var decls []nsDecl
	var attrs []sortAttr
	if c.mode.exclusive {
		decls = c.exclusiveDecls(el, scope, rendered)
	} else {
		decls = inclusiveDecls(scope, parentScope, apex)
	}
	for _, a := range el.Attr {
		if _, isDecl := nsDeclPrefix(a); isDecl {
			continue
		}
		sa, err := resolveAttr(a, scope)
		if err != nil {
			return err
		}
		attrs = append(attrs, sa)
	}
	for _, a := range extra {
		attrs = append(attrs, sortAttr{uri: xmlNamespace, local: a.Key, qname: "xml:" + a.Key, value: a.Value})
	}
	if el.Space != "" && el.Space != "xml" {
		if _, ok := scope[el.Space]; !ok {
			return fmt.Errorf("element <%s:%s> uses an undeclared namespace prefix", el.Space, el.Tag)
		}
	}

	sort.Slice(decls, func(i, j int) bool { return decls[i].prefix < decls[j].prefix })
	sort.Slice(attrs, func(i, j int) bool {
		if attrs[i].uri != attrs[j].uri {
			return attrs[i].uri < attrs[j].uri
		}
		return attrs[i].local < attrs[j].local
	})

	w := c.w
	w.WriteByte('<')
	qname := el.FullTag()
	w.WriteString(qname)
	childRendered := rendered
	if len(decls) > 0 && c.mode.exclusive {
		childRendered = make(nsScope, len(rendered)+len(decls))
		for k, v := range rendered {
			childRendered[k] = v
		}
	}
	for _, d := range decls {
		if d.prefix == "" {
			w.WriteString(` xmlns="`)
		} else {
			w.WriteString(` xmlns:`)
			w.WriteString(d.prefix)
			w.WriteString(`="`)
		}
		escapeAttr(w, d.uri)
		w.WriteByte('"')
		if c.mode.exclusive {
			childRendered[d.prefix] = d.uri
		}
	}
	for _, a := range attrs {
		w.WriteByte(' ')
		w.WriteString(a.qname)
		w.WriteString(`="`)
		escapeAttr(w, a.value)
		w.WriteByte('"')
	}
	w.WriteByte('>')
	if !c.mode.exclusive {
		childRendered = scope
	}

	for _, tok := range el.Child {
		switch t := tok.(type) {
		case *etree.Element:
			if t == c.skip {
				continue
			}
			if err := c.element(t, scope, childRendered, nil, false); err != nil {
				return err
			}
		case *etree.CharData:
			escapeText(w, t.Data)
		case *etree.ProcInst:
			w.WriteString("<?")
			w.WriteString(t.Target)
			if inst := normalizeNewlines(t.Inst); inst != "" {
				w.WriteByte(' ')
				w.WriteString(inst)
			}
			w.WriteString("?>")
		case *etree.Comment:
			// C14N without comments.
		case *etree.Directive:
			return fmt.Errorf("unexpected directive inside an element")
		}
	}
	w.WriteString("</")
	w.WriteString(qname)
	w.WriteByte('>')
	return nil
}

// inclusiveDecls lists the namespace nodes inclusive C14N renders on an
// element: at the apex every non-empty namespace in scope, below it those
// that differ from the parent's, plus xmlns="" when a non-empty default
// namespace is undeclared.
func inclusiveDecls(scope, parentScope nsScope, apex bool) []nsDecl {
	var out []nsDecl
	for prefix, uri := range scope {
		if prefix == "xml" {
			continue
		}
		if apex {
			if uri != "" {
				out = append(out, nsDecl{prefix, uri})
			}
			continue
		}
		prev, had := parentScope[prefix]
		if prev == uri && (had || uri == "") {
			continue
		}
		if uri == "" && prefix != "" {
			continue // xmlns:p="" is not a namespace node (XML 1.0)
		}
		out = append(out, nsDecl{prefix, uri})
	}
	return out
}

// exclusiveDecls lists the namespace nodes exclusive C14N renders on el: the
// ones visibly utilized by el or its attributes (plus those of the
// InclusiveNamespaces list), unless an output ancestor rendered the same.
func (c *canonicalizer) exclusiveDecls(el *etree.Element, scope, rendered nsScope) []nsDecl {
	used := map[string]bool{el.Space: true}
	for _, a := range el.Attr {
		if _, isDecl := nsDeclPrefix(a); !isDecl && a.Space != "" {
			used[a.Space] = true
		}
	}
	for p := range c.mode.inclusivePrefixes {
		if _, inScope := scope[p]; inScope || p == "" {
			used[p] = true
		}
	}
	var out []nsDecl
	for prefix := range used {
		if prefix == "xml" {
			continue
		}
		uri := scope[prefix]
		prev, had := rendered[prefix]
		if prefix == "" {
			// The default namespace: render xmlns="" only to undeclare a
			// rendered non-empty default.
			if uri == prev {
				continue
			}
			out = append(out, nsDecl{"", uri})
			continue
		}
		if uri == "" || (had && prev == uri) {
			continue
		}
		out = append(out, nsDecl{prefix, uri})
	}
	return out
}

func resolveAttr(a etree.Attr, scope nsScope) (sortAttr, error) {
	sa := sortAttr{local: a.Key, qname: a.FullKey(), value: a.Value}
	switch a.Space {
	case "":
	case "xml":
		sa.uri = xmlNamespace
	default:
		uri, ok := scope[a.Space]
		if !ok || uri == "" {
			return sa, fmt.Errorf("attribute %s uses an undeclared namespace prefix", a.FullKey())
		}
		sa.uri = uri
	}
	return sa, nil
}

func normalizeNewlines(s string) string {
	if !strings.Contains(s, "\r") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n")
}

// escapeText escapes character data as C14N requires.
func escapeText(w *bytes.Buffer, s string) { escapeC14N(w, s, &textEscapes) }

// escapeAttr escapes an attribute value as C14N requires.
func escapeAttr(w *bytes.Buffer, s string) { escapeC14N(w, s, &attrEscapes) }

// The replacements C14N 1.0 makes in text and in attribute values (§2.3);
// every other byte is written as it is.
var (
	textEscapes = [256]string{'&': "&amp;", '<': "&lt;", '>': "&gt;", '\r': "&#xD;"}
	attrEscapes = [256]string{'&': "&amp;", '<': "&lt;", '"': "&quot;", '\t': "&#x9;", '\n': "&#xA;", '\r': "&#xD;"}
)

func escapeC14N(w *bytes.Buffer, s string, table *[256]string) {
	last := 0
	for i := 0; i < len(s); i++ {
		esc := table[s[i]]
		if esc == "" {
			continue
		}
		w.WriteString(s[last:i])
		w.WriteString(esc)
		last = i + 1
	}
	w.WriteString(s[last:])
}
