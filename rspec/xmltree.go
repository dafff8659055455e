package rspec

import (
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/geniam/geniam/am"
)

// This file holds the small XML toolkit the request parser and the manifest
// writer share: a streaming reader with limits that yields namespace-resolved
// subtrees, and a writer that gives every namespace a canonical prefix.
//
// Why not encoding/xml's Encoder or a DOM library: the Encoder invents
// prefixes ("_xmlns") for foreign namespaces, and a node we echo must keep
// every foreign extension intact and self-contained. Why canonical prefixes:
// the manifest adds our own elements inside an echoed node, so the prefixes
// "geniam", "ssh-user", "opstate" and "xsi" must mean our namespaces there,
// whatever the request bound them to.

const (
	xmlNamespace   = "http://www.w3.org/XML/1998/namespace"
	xmlnsNamespace = "http://www.w3.org/2000/xmlns/"
)

// reservedPrefixes are the prefixes we always bind to these namespaces; the
// core RSpec namespace is always the default namespace.
var reservedPrefixes = map[string]string{
	"xsi":      "http://www.w3.org/2001/XMLSchema-instance",
	"opstate":  am.OpStateNamespace,
	"ssh-user": am.UserNamespace,
	"geniam":   am.GeniamNamespace,
	"emulab":   "http://www.protogeni.net/resources/rspec/ext/emulab/1",
	"xml":      xmlNamespace,
}

var reservedByNamespace = func() map[string]string {
	m := make(map[string]string, len(reservedPrefixes))
	for p, ns := range reservedPrefixes {
		m[ns] = p
	}
	return m
}()

// element is one namespace-resolved XML element.
type element struct {
	Space, Local string // namespace URI ("" for none) and local name
	Attrs        []attr
	Children     []any // *element, charData or comment
}

type attr struct{ Space, Local, Value string }
type charData string
type comment string

func (e *element) is(space, local string) bool { return e.Space == space && e.Local == local }

// attr returns the value of the unqualified attribute name and whether it is present.
func (e *element) attr(name string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Space == "" && a.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

func (e *element) attrNS(space, name string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Space == space && a.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

// setAttr replaces or adds an attribute.
func (e *element) setAttr(space, name, value string) {
	for i, a := range e.Attrs {
		if a.Space == space && a.Local == name {
			e.Attrs[i].Value = value
			return
		}
	}
	e.Attrs = append(e.Attrs, attr{space, name, value})
}

// elements returns the child elements.
func (e *element) elements() []*element {
	var out []*element
	for _, c := range e.Children {
		if el, ok := c.(*element); ok {
			out = append(out, el)
		}
	}
	return out
}

// elementsIn returns the child elements in namespace space; the others
// (extensions) are for whoever reads that namespace.
func (e *element) elementsIn(space string) []*element {
	var out []*element
	for _, el := range e.elements() {
		if el.Space == space {
			out = append(out, el)
		}
	}
	return out
}

// removeChildren drops the child elements for which drop returns true.
func (e *element) removeChildren(drop func(*element) bool) {
	out := e.Children[:0]
	for _, c := range e.Children {
		if el, ok := c.(*element); ok && drop(el) {
			continue
		}
		out = append(out, c)
	}
	e.Children = out
}

// readLimits bound what one document may cost.
type readLimits struct {
	maxDepth    int // element nesting
	maxElements int // elements in one subtree returned by readElement
}

// reader streams a document token by token and hands out subtrees.
type reader struct {
	d        *xml.Decoder
	limits   readLimits
	prefixes map[string]string // namespace URI -> the first prefix the document declared for it
	depth    int
}

func newReader(doc string, limits readLimits) *reader {
	d := xml.NewDecoder(strings.NewReader(doc))
	d.Strict = true
	// No Entity map and no CharsetReader: only the five predefined entities
	// and UTF-8 (or US-ASCII) documents are accepted.
	return &reader{d: d, limits: limits, prefixes: map[string]string{}}
}

// badXML wraps a decoder error as BADARGS with the position.
func (r *reader) badXML(err error) error {
	var e *am.Err
	if errors.As(err, &e) {
		return err
	}
	line, col := r.d.InputPos()
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "XML syntax error on line "+strconv.Itoa(line)+": ")
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		msg = "unexpected end of document"
	}
	return am.Wrap(am.BadArgs, err, "RSpec is not well-formed XML (line %d, column %d): %s", line, col, msg)
}

// token returns the next token with names resolved; it refuses DTDs and
// undeclared prefixes and keeps track of depth.
func (r *reader) token() (xml.Token, error) {
	tok, err := r.d.Token()
	if err != nil {
		return nil, r.badXML(err)
	}
	switch t := tok.(type) {
	case xml.Directive:
		// A DOCTYPE could declare entities (billion laughs) or fetch external
		// DTDs; RSpecs never need one.
		return nil, am.Errorf(am.BadArgs, "RSpec must not contain a DOCTYPE or other <!...> declaration")
	case xml.StartElement:
		r.depth++
		if r.depth > r.limits.maxDepth {
			return nil, am.Errorf(am.BadArgs, "RSpec nests elements deeper than %d levels", r.limits.maxDepth)
		}
		if err := r.checkNames(t); err != nil {
			return nil, err
		}
		return t.Copy(), nil
	case xml.EndElement:
		r.depth--
	case xml.CharData:
		return t.Copy(), nil
	case xml.Comment:
		return t.Copy(), nil
	}
	return tok, nil
}

// checkNames enforces what encoding/xml lets through but XML Namespaces
// forbids, so that whatever we echo is well-formed for every parser:
// undeclared prefixes, names with extra colons, duplicate attributes or
// declarations, empty or relative namespace names, rebinding xml/xmlns.
func (r *reader) checkNames(t xml.StartElement) error {
	el := t.Name.Local
	if el == "" || strings.Contains(el, ":") {
		return am.Errorf(am.BadArgs, "element name %q is not a valid XML name", el)
	}
	seen := make(map[xml.Name]bool, len(t.Attr))
	for _, a := range t.Attr {
		if a.Name.Local == "" || strings.Contains(a.Name.Local, ":") {
			return am.Errorf(am.BadArgs, "attribute name %q of <%s> is not a valid XML name", a.Name.Local, el)
		}
		if seen[a.Name] {
			return am.Errorf(am.BadArgs, "element <%s> has attribute %q twice", el, a.Name.Local)
		}
		seen[a.Name] = true
		switch {
		case a.Name.Space == "xmlns":
			switch {
			case a.Value == "":
				return am.Errorf(am.BadArgs, "element <%s> binds prefix %q to an empty namespace name", el, a.Name.Local)
			case !strings.Contains(a.Value, ":"):
				return am.Errorf(am.BadArgs, "element <%s> binds prefix %q to %q, which is not an absolute URI", el, a.Name.Local, a.Value)
			case a.Value == xmlnsNamespace, a.Value == xmlNamespace && a.Name.Local != "xml", a.Name.Local == "xmlns",
				a.Name.Local == "xml" && a.Value != xmlNamespace:
				return am.Errorf(am.BadArgs, "element <%s> rebinds a reserved namespace prefix or name", el)
			}
			if _, known := r.prefixes[a.Value]; !known {
				r.prefixes[a.Value] = a.Name.Local
			}
		case a.Name.Space == "" && a.Name.Local == "xmlns":
			if a.Value != "" && !strings.Contains(a.Value, ":") || a.Value == xmlnsNamespace || a.Value == xmlNamespace {
				return am.Errorf(am.BadArgs, "element <%s> declares default namespace %q, which is not an absolute URI", el, a.Value)
			}
		case undeclared(a.Name.Space):
			return am.Errorf(am.BadArgs, "attribute %s:%s of <%s> uses an undeclared namespace prefix", a.Name.Space, a.Name.Local, el)
		}
	}
	if undeclared(t.Name.Space) {
		return am.Errorf(am.BadArgs, "element <%s:%s> uses an undeclared namespace prefix", t.Name.Space, el)
	}
	return nil
}

// undeclared reports whether the decoder left a prefix untranslated: a
// namespace name is a URI and so holds a ':', a bare prefix cannot.
func undeclared(space string) bool {
	return space != "" && !strings.Contains(space, ":")
}

// readElement reads the rest of the element whose start tag was just
// returned by token, up to and including its end tag.
func (r *reader) readElement(start xml.StartElement) (*element, error) {
	count := 1
	root := newElement(start)
	stack := []*element{root}
	for len(stack) > 0 {
		tok, err := r.token()
		if err != nil {
			return nil, err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			count++
			if count > r.limits.maxElements {
				return nil, am.Errorf(am.TooBig, "element <%s> holds more than %d elements", root.Local, r.limits.maxElements)
			}
			child := newElement(t)
			top.Children = append(top.Children, child)
			stack = append(stack, child)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			top.Children = append(top.Children, charData(t))
		case xml.Comment:
			top.Children = append(top.Children, comment(t))
		}
	}
	return root, nil
}

func newElement(t xml.StartElement) *element {
	e := &element{Space: t.Name.Space, Local: t.Name.Local}
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue // declarations are regenerated when the element is written
		}
		e.Attrs = append(e.Attrs, attr{a.Name.Space, a.Name.Local, a.Value})
	}
	return e
}

// parseElement parses a document that is a single element (a stored
// NodeXML or foreign element) and returns it with the prefixes it declared.
func parseElement(doc string, limits readLimits) (*element, map[string]string, error) {
	r := newReader(doc, limits)
	for {
		tok, err := r.token()
		if err != nil {
			return nil, nil, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			el, err := r.readElement(start)
			return el, r.prefixes, err
		}
	}
}

// prefixer assigns prefixes to namespaces when writing: reserved prefixes for
// known namespaces, else the prefix the source document used, else nsN.
type prefixer struct {
	hints    map[string]string // namespace -> prefix the source used
	assigned map[string]string // namespace -> prefix
	used     map[string]bool   // prefixes taken
}

func newPrefixer(hints map[string]string) *prefixer {
	return &prefixer{hints: hints, assigned: map[string]string{}, used: map[string]bool{}}
}

func (p *prefixer) prefix(space string) string {
	if pre, ok := reservedByNamespace[space]; ok {
		return pre
	}
	if pre, ok := p.assigned[space]; ok {
		return pre
	}
	pre := p.hints[space]
	if _, reserved := reservedPrefixes[pre]; pre == "" || reserved || p.used[pre] || !validPrefix(pre) {
		for i := 1; ; i++ {
			pre = "ns" + strconv.Itoa(i)
			if !p.used[pre] {
				break
			}
		}
	}
	p.assigned[space] = pre
	p.used[pre] = true
	return pre
}

func validPrefix(p string) bool {
	if p == "" || strings.HasPrefix(strings.ToLower(p), "xml") {
		return false
	}
	for i, r := range p {
		ok := r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') ||
			(i > 0 && (r == '-' || r == '.' || ('0' <= r && r <= '9')))
		if !ok {
			return false
		}
	}
	return true
}

// namespacesUsed lists, in first-use order, the non-core namespaces an
// element subtree needs declared.
func namespacesUsed(e *element, out []string, seen map[string]bool) []string {
	add := func(space string) {
		if space == "" || space == am.RSpecNamespace || space == xmlNamespace || seen[space] {
			return
		}
		seen[space] = true
		out = append(out, space)
	}
	add(e.Space)
	for _, a := range e.Attrs {
		add(a.Space)
	}
	for _, c := range e.Children {
		if el, ok := c.(*element); ok {
			out = namespacesUsed(el, out, seen)
		}
	}
	return out
}

// writeElement writes e as self-contained XML: every prefix it uses is
// declared on e itself unless declared (with the same meaning) in the
// enclosing document, listed in inScope. The core namespace is the default
// namespace; defaultNS is the default namespace in effect around e. Elements
// without text content are re-indented as if e sat at the given depth.
func writeElement(b *strings.Builder, e *element, p *prefixer, inScope map[string]bool, defaultNS string, depth int) {
	var decls []string
	for _, space := range namespacesUsed(e, nil, map[string]bool{}) {
		pre := p.prefix(space)
		if inScope[pre+"="+space] {
			continue
		}
		decls = append(decls, pre, space)
	}
	writeTree(b, e, p, defaultNS, decls, depth)
}

// writeTree writes e; depth < 0 writes it exactly as it is (inside text
// content, where whitespace matters).
func writeTree(b *strings.Builder, e *element, p *prefixer, defaultNS string, decls []string, depth int) {
	name := e.Local
	switch e.Space {
	case am.RSpecNamespace, "":
	default:
		name = p.prefix(e.Space) + ":" + e.Local
	}
	b.WriteByte('<')
	b.WriteString(name)
	// Elements of the core namespace (or of none) use the default namespace:
	// declare it whenever it differs from the one in effect.
	if e.Space == am.RSpecNamespace || e.Space == "" {
		if e.Space != defaultNS {
			writeAttr(b, "xmlns", e.Space)
			defaultNS = e.Space
		}
	}
	for i := 0; i < len(decls); i += 2 {
		writeAttr(b, "xmlns:"+decls[i], decls[i+1])
	}
	for _, a := range e.Attrs {
		n := a.Local
		if a.Space != "" {
			n = p.prefix(a.Space) + ":" + a.Local
		}
		writeAttr(b, n, a.Value)
	}
	children := e.Children
	pretty := depth >= 0 && elementOnly(e)
	if pretty {
		children = withoutBlanks(children)
	}
	if len(children) == 0 {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	childDepth := -1
	if pretty {
		childDepth = depth + 1
	}
	for _, c := range children {
		if pretty {
			newline(b, childDepth)
		}
		switch c := c.(type) {
		case *element:
			writeTree(b, c, p, defaultNS, nil, childDepth)
		case charData:
			escapeText(b, string(c))
		case comment:
			// "--" may not appear inside a comment; the reader never yields
			// one, but a hand-built tree might.
			b.WriteString("<!--")
			b.WriteString(strings.ReplaceAll(string(c), "--", "- -"))
			b.WriteString("-->")
		}
	}
	if pretty {
		newline(b, depth)
	}
	b.WriteString("</")
	b.WriteString(name)
	b.WriteByte('>')
}

func newline(b *strings.Builder, depth int) {
	b.WriteByte('\n')
	for i := 0; i < depth; i++ {
		b.WriteString("  ")
	}
}

// elementOnly reports whether e holds no text but blanks: then its
// whitespace is layout and may be redone.
func elementOnly(e *element) bool {
	for _, c := range e.Children {
		if t, ok := c.(charData); ok && strings.TrimSpace(string(t)) != "" {
			return false
		}
	}
	return true
}

func withoutBlanks(children []any) []any {
	out := make([]any, 0, len(children))
	for _, c := range children {
		if _, ok := c.(charData); ok {
			continue
		}
		out = append(out, c)
	}
	return out
}

// writeAttr writes ` name="escaped value"`.
func writeAttr(b *strings.Builder, name, value string) {
	b.WriteByte(' ')
	b.WriteString(name)
	b.WriteString(`="`)
	escapeAttr(b, value)
	b.WriteByte('"')
}

// escapeAttr writes s as an attribute value: markup and whitespace that an
// XML parser would normalise are written as character references, and
// characters XML cannot carry at all become U+FFFD.
func escapeAttr(b *strings.Builder, s string) {
	escape(b, s, true)
}

func escapeText(b *strings.Builder, s string) {
	escape(b, s, false)
}

func escape(b *strings.Builder, s string, inAttr bool) {
	if plainASCII(s) {
		b.WriteString(s)
		return
	}
	last := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var rep string
		switch {
		case r == '&':
			rep = "&amp;"
		case r == '<':
			rep = "&lt;"
		case r == '>':
			rep = "&gt;"
		case r == '"' && inAttr:
			rep = "&quot;"
		case r == '\t' && inAttr:
			rep = "&#x9;"
		case r == '\n' && inAttr:
			rep = "&#xA;"
		case r == '\r':
			rep = "&#xD;"
		case r == utf8.RuneError && size == 1, !isXMLChar(r):
			rep = "\uFFFD"
		default:
			i += size
			continue
		}
		b.WriteString(s[last:i])
		b.WriteString(rep)
		i += size
		last = i
	}
	b.WriteString(s[last:])
}

// plainASCII reports whether s is printable ASCII without markup: the
// common case, written without looking at runes.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '&', c == '<', c == '>', c == '"':
			return false
		}
	}
	return true
}

// isXMLChar reports whether r may appear in an XML 1.0 document.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		(r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) ||
		(r >= 0x10000 && r <= 0x10FFFF)
}
