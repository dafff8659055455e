package credentials

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/beevik/etree"
)

// parseXML is a strict XML 1.0 + Namespaces parser for untrusted credentials
// that builds an etree document. It exists because encoding/xml (under
// etree) reads byte by byte through interfaces and dominated the cost of a
// credential verification; this one is about four times faster.
//
// It accepts what a credential can contain: an XML declaration (UTF-8 only),
// elements, attributes, character and predefined entity references, CDATA,
// comments and processing instructions. It refuses any DOCTYPE (so no
// entities and no DTD-declared IDs), undeclared namespace prefixes, duplicate
// attributes, and characters XML forbids. It applies the normalizations a
// conforming parser does before C14N sees the data: line ends become LF, and
// literal tab, CR and LF in attribute values become spaces.
func parseXML(raw []byte) (*etree.Document, error) {
	p := &xmlParser{src: raw}
	if err := p.document(); err != nil {
		line := 1 + bytes.Count(raw[:min(p.pos, len(raw))], []byte("\n"))
		return nil, fmt.Errorf("line %d: %w", line, err)
	}
	return p.doc, nil
}

type xmlParser struct {
	src   []byte
	pos   int
	doc   *etree.Document
	depth int
	text  []byte   // scratch for character data and attribute values
	attrs []string // scratch: the current start tag's attribute names and values
	// scopes is the stack of namespace prefixes in scope (without xml).
	scopes []map[string]bool
}

var errEOF = errors.New("unexpected end of document")

func (p *xmlParser) document() error {
	if !utf8.Valid(p.src) {
		return errors.New("not valid UTF-8")
	}
	p.doc = etree.NewDocument()
	p.pos = 0
	if bytes.HasPrefix(p.src, []byte("\xef\xbb\xbf")) {
		p.pos = 3
	}
	// Strictly the declaration comes first; a credential pasted with a
	// leading newline is still the same credential.
	p.skipSpace()
	if p.hasPrefix("<?xml") && p.pos+5 < len(p.src) && isSpace(p.src[p.pos+5]) {
		if err := p.xmlDecl(); err != nil {
			return err
		}
	}
	sawRoot := false
	for {
		p.skipSpace()
		if p.pos >= len(p.src) {
			break
		}
		switch {
		case p.hasPrefix("<!--"):
			if err := p.comment(&p.doc.Element); err != nil {
				return err
			}
		case p.hasPrefix("<?"):
			if err := p.procInst(&p.doc.Element); err != nil {
				return err
			}
		case p.hasPrefix("<!"):
			return errors.New("DOCTYPE and other declarations are not allowed")
		case p.src[p.pos] == '<' && !sawRoot:
			if err := p.element(&p.doc.Element); err != nil {
				return err
			}
			sawRoot = true
		default:
			return errors.New("content outside the root element")
		}
	}
	if !sawRoot {
		return errors.New("no root element")
	}
	return nil
}

func (p *xmlParser) hasPrefix(s string) bool {
	return len(p.src)-p.pos >= len(s) && string(p.src[p.pos:p.pos+len(s)]) == s
}

func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

func (p *xmlParser) skipSpace() bool {
	start := p.pos
	for p.pos < len(p.src) && isSpace(p.src[p.pos]) {
		p.pos++
	}
	return p.pos > start
}

// xmlDecl reads <?xml version="1.0" encoding="..." standalone="..."?>.
func (p *xmlParser) xmlDecl() error {
	end := bytes.Index(p.src[p.pos:], []byte("?>"))
	if end < 0 {
		return errEOF
	}
	decl := string(p.src[p.pos+5 : p.pos+end])
	p.pos += end + 2
	if v := declValue(decl, "version"); v != "1.0" {
		return fmt.Errorf("XML version %q is not supported", v)
	}
	switch strings.ToLower(declValue(decl, "encoding")) {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
	default:
		return fmt.Errorf("encoding %q is not supported", declValue(decl, "encoding"))
	}
	return nil
}

func declValue(decl, name string) string {
	i := strings.Index(decl, name)
	if i < 0 {
		return ""
	}
	rest := strings.TrimLeft(decl[i+len(name):], " \t\r\n")
	if !strings.HasPrefix(rest, "=") {
		return ""
	}
	rest = strings.TrimLeft(rest[1:], " \t\r\n")
	if rest == "" || (rest[0] != '"' && rest[0] != '\'') {
		return ""
	}
	j := strings.IndexByte(rest[1:], rest[0])
	if j < 0 {
		return ""
	}
	return rest[1 : 1+j]
}

// name reads an XML name (with at most one colon, for namespaces).
func (p *xmlParser) name() (string, error) {
	start := p.pos
	for p.pos < len(p.src) {
		b := p.src[p.pos]
		if b >= 0x80 {
			r, n := utf8.DecodeRune(p.src[p.pos:])
			if !isNameRune(r, p.pos == start) {
				break
			}
			p.pos += n
			continue
		}
		if !isNameByte(b, p.pos == start) {
			break
		}
		p.pos++
	}
	if p.pos == start {
		if p.pos >= len(p.src) {
			return "", errEOF
		}
		return "", fmt.Errorf("expected a name, found %q", p.src[p.pos])
	}
	n := string(p.src[start:p.pos])
	if c := strings.Count(n, ":"); c > 1 || (c == 1 && (n[0] == ':' || n[len(n)-1] == ':')) {
		return "", fmt.Errorf("name %q is not a valid qualified name", n)
	}
	return n, nil
}

func isNameByte(b byte, first bool) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', b == '_', b == ':':
		return true
	case '0' <= b && b <= '9', b == '-', b == '.':
		return !first
	}
	return false
}

// isNameRune follows the NameStartChar and NameChar productions of XML 1.0
// (fifth edition) for non-ASCII characters.
func isNameRune(r rune, first bool) bool {
	switch {
	case r == 0xB7, 0x0300 <= r && r <= 0x036F, 0x203F <= r && r <= 0x2040:
		return !first
	case 0xC0 <= r && r <= 0xD6, 0xD8 <= r && r <= 0xF6, 0xF8 <= r && r <= 0x2FF,
		0x370 <= r && r <= 0x37D, 0x37F <= r && r <= 0x1FFF, 0x200C <= r && r <= 0x200D,
		0x2070 <= r && r <= 0x218F, 0x2C00 <= r && r <= 0x2FEF, 0x3001 <= r && r <= 0xD7FF,
		0xF900 <= r && r <= 0xFDCF, 0xFDF0 <= r && r <= 0xFFFD, 0x10000 <= r && r <= 0xEFFFF:
		return true
	}
	return false
}

// isXMLChar reports whether r may appear in an XML 1.0 document.
func isXMLChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' ||
		(0x20 <= r && r <= 0xD7FF) || (0xE000 <= r && r <= 0xFFFD) || (0x10000 <= r && r <= 0x10FFFF)
}

func (p *xmlParser) element(parent *etree.Element) error {
	p.depth++
	if p.depth > maxDepth {
		return fmt.Errorf("elements nested deeper than %d", maxDepth)
	}
	defer func() { p.depth-- }()
	p.pos++ // '<'
	qname, err := p.name()
	if err != nil {
		return err
	}
	// Attributes: collected first, since namespace declarations may follow
	// the attributes that use them.
	p.attrs = p.attrs[:0]
	empty := false
	for {
		hadSpace := p.skipSpace()
		if p.pos >= len(p.src) {
			return errEOF
		}
		if p.src[p.pos] == '>' {
			p.pos++
			break
		}
		if p.hasPrefix("/>") {
			p.pos += 2
			empty = true
			break
		}
		if !hadSpace {
			return errors.New("attributes must be separated by white space")
		}
		an, err := p.name()
		if err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.src) || p.src[p.pos] != '=' {
			return fmt.Errorf("attribute %s has no value", an)
		}
		p.pos++
		p.skipSpace()
		v, err := p.attrValue()
		if err != nil {
			return fmt.Errorf("attribute %s: %w", an, err)
		}
		for i := 0; i < len(p.attrs); i += 2 {
			if p.attrs[i] == an {
				return fmt.Errorf("attribute %s appears twice", an)
			}
		}
		p.attrs = append(p.attrs, an, v)
	}

	// Namespaces: this element's scope, then check every prefix in use.
	var scope map[string]bool
	for i := 0; i < len(p.attrs); i += 2 {
		an, v := p.attrs[i], p.attrs[i+1]
		prefix, local, hasPrefix := strings.Cut(an, ":")
		switch {
		case hasPrefix && prefix == "xmlns":
			if local == "xml" || local == "xmlns" || v == "" {
				return fmt.Errorf("namespace declaration %s=%q is not allowed", an, v)
			}
		case !hasPrefix && an == "xmlns":
			local = ""
		default:
			continue
		}
		if scope == nil {
			scope = map[string]bool{}
		}
		scope[local] = true
	}
	p.scopes = append(p.scopes, scope)
	defer func() { p.scopes = p.scopes[:len(p.scopes)-1] }()
	if prefix, _, ok := strings.Cut(qname, ":"); ok && !p.declared(prefix) {
		return fmt.Errorf("element %s uses an undeclared namespace prefix", qname)
	}
	el := parent.CreateElement(qname)
	for i := 0; i < len(p.attrs); i += 2 {
		an := p.attrs[i]
		if prefix, _, ok := strings.Cut(an, ":"); ok && prefix != "xmlns" && !p.declared(prefix) {
			return fmt.Errorf("attribute %s uses an undeclared namespace prefix", an)
		}
		el.CreateAttr(an, p.attrs[i+1])
	}
	if empty {
		return nil
	}
	if err := p.content(el); err != nil {
		return err
	}
	// End tag.
	end, err := p.name()
	if err != nil {
		return err
	}
	if end != qname {
		return fmt.Errorf("element <%s> closed by </%s>", qname, end)
	}
	p.skipSpace()
	if p.pos >= len(p.src) || p.src[p.pos] != '>' {
		return fmt.Errorf("malformed end tag </%s>", end)
	}
	p.pos++
	return nil
}

// declared reports whether a namespace prefix is in scope.
func (p *xmlParser) declared(prefix string) bool {
	if prefix == "xml" {
		return true
	}
	for i := len(p.scopes) - 1; i >= 0; i-- {
		if p.scopes[i][prefix] {
			return true
		}
	}
	return false
}

// content reads an element's content up to and including the "</" of its
// end tag.
func (p *xmlParser) content(el *etree.Element) error {
	p.text = p.text[:0]
	flush := func() {
		if len(p.text) > 0 {
			el.CreateText(string(p.text))
			p.text = p.text[:0]
		}
	}
	for {
		// Plain text up to the next markup or reference.
		start := p.pos
		for p.pos < len(p.src) {
			b := p.src[p.pos]
			if b == '<' || b == '&' || b == '\r' || b == ']' || b < 0x20 || b >= 0x80 {
				break
			}
			p.pos++
		}
		p.text = append(p.text, p.src[start:p.pos]...)
		if p.pos >= len(p.src) {
			return errEOF
		}
		switch b := p.src[p.pos]; {
		case b == '<':
			var read func(*etree.Element) error
			child := false
			switch {
			case p.hasPrefix("</"):
				flush()
				p.pos += 2
				return nil
			case p.hasPrefix("<!--"):
				read = p.comment
			case p.hasPrefix("<![CDATA["):
				read = p.cdata
			case p.hasPrefix("<?"):
				read = p.procInst
			case p.hasPrefix("<!"):
				return errors.New("declarations are not allowed inside elements")
			default:
				read, child = p.element, true
			}
			flush()
			if err := read(el); err != nil {
				return err
			}
			if child {
				p.text = p.text[:0] // the child used the scratch buffer
			}
		case b == '&':
			if err := p.reference(); err != nil {
				return err
			}
		case b == '\r':
			p.text = append(p.text, '\n')
			p.pos++
			if p.pos < len(p.src) && p.src[p.pos] == '\n' {
				p.pos++
			}
		case b == ']':
			if p.hasPrefix("]]>") {
				return errors.New("]]> is not allowed in text")
			}
			p.text = append(p.text, b)
			p.pos++
		default:
			if err := p.char(); err != nil {
				return err
			}
		}
	}
}

// char copies one character (a control character or a multi-byte one) to
// p.text after checking that XML allows it.
func (p *xmlParser) char() error {
	r, n := utf8.DecodeRune(p.src[p.pos:])
	if !isXMLChar(r) {
		return fmt.Errorf("character %U is not allowed in XML", r)
	}
	p.text = append(p.text, p.src[p.pos:p.pos+n]...)
	p.pos += n
	return nil
}

// reference expands &name; or &#N; / &#xH; into p.text.
func (p *xmlParser) reference() error {
	end := bytes.IndexByte(p.src[p.pos:min(len(p.src), p.pos+16)], ';')
	if end < 0 {
		return errors.New("malformed character or entity reference")
	}
	ref := string(p.src[p.pos+1 : p.pos+end])
	p.pos += end + 1
	switch ref {
	case "lt":
		p.text = append(p.text, '<')
	case "gt":
		p.text = append(p.text, '>')
	case "amp":
		p.text = append(p.text, '&')
	case "apos":
		p.text = append(p.text, '\'')
	case "quot":
		p.text = append(p.text, '"')
	default:
		if !strings.HasPrefix(ref, "#") {
			return fmt.Errorf("unknown entity &%s;", ref)
		}
		var n uint64
		var err error
		if strings.HasPrefix(ref, "#x") {
			n, err = strconv.ParseUint(ref[2:], 16, 32)
		} else {
			n, err = strconv.ParseUint(ref[1:], 10, 32)
		}
		if err != nil || strings.ContainsAny(ref[1:2], "+-") || !isXMLChar(rune(n)) {
			return fmt.Errorf("invalid character reference &%s;", ref)
		}
		p.text = utf8.AppendRune(p.text, rune(n))
	}
	return nil
}

// attrValue reads a quoted attribute value, normalized.
func (p *xmlParser) attrValue() (string, error) {
	if p.pos >= len(p.src) || (p.src[p.pos] != '"' && p.src[p.pos] != '\'') {
		return "", errors.New("value is not quoted")
	}
	quote := p.src[p.pos]
	p.pos++
	p.text = p.text[:0]
	for {
		start := p.pos
		for p.pos < len(p.src) {
			b := p.src[p.pos]
			if b == quote || b == '<' || b == '&' || b < 0x20 || b >= 0x80 {
				break
			}
			p.pos++
		}
		p.text = append(p.text, p.src[start:p.pos]...)
		if p.pos >= len(p.src) {
			return "", errEOF
		}
		switch b := p.src[p.pos]; {
		case b == quote:
			p.pos++
			return string(p.text), nil
		case b == '<':
			return "", errors.New("< is not allowed in attribute values")
		case b == '&':
			if err := p.reference(); err != nil {
				return "", err
			}
		case b == '\r':
			p.text = append(p.text, ' ')
			p.pos++
			if p.pos < len(p.src) && p.src[p.pos] == '\n' {
				p.pos++
			}
		case b == '\n' || b == '\t':
			p.text = append(p.text, ' ')
			p.pos++
		default:
			if err := p.char(); err != nil {
				return "", err
			}
		}
	}
}

// until returns the text up to marker (exclusive) and moves past the marker,
// checking characters and normalizing line ends.
func (p *xmlParser) until(marker string) (string, error) {
	end := bytes.Index(p.src[p.pos:], []byte(marker))
	if end < 0 {
		return "", errEOF
	}
	raw := p.src[p.pos : p.pos+end]
	p.pos += end + len(marker)
	for i := 0; i < len(raw); {
		r, n := utf8.DecodeRune(raw[i:])
		if !isXMLChar(r) {
			return "", fmt.Errorf("character %U is not allowed in XML", r)
		}
		i += n
	}
	return normalizeNewlines(string(raw)), nil
}

func (p *xmlParser) comment(parent *etree.Element) error {
	p.pos += 4
	s, err := p.until("-->")
	if err != nil {
		return err
	}
	if strings.Contains(s, "--") || strings.HasSuffix(s, "-") {
		return errors.New("-- is not allowed inside a comment")
	}
	parent.CreateComment(s)
	return nil
}

func (p *xmlParser) cdata(parent *etree.Element) error {
	p.pos += 9
	s, err := p.until("]]>")
	if err != nil {
		return err
	}
	parent.CreateCData(s)
	return nil
}

func (p *xmlParser) procInst(parent *etree.Element) error {
	p.pos += 2
	target, err := p.name()
	if err != nil {
		return err
	}
	if strings.EqualFold(target, "xml") || strings.Contains(target, ":") {
		return fmt.Errorf("processing instruction target %q is not allowed", target)
	}
	if !p.hasPrefix("?>") && !p.skipSpace() {
		return errors.New("malformed processing instruction")
	}
	inst, err := p.until("?>")
	if err != nil {
		return err
	}
	parent.CreateProcInst(target, inst)
	return nil
}
