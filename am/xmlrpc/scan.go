package xmlrpc

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// scanner tokenizes an XML document held in memory, as strictly as
// encoding/xml's Decoder with Strict set and no entity map, but only as far
// as XML-RPC needs: start and end tags (attributes are checked, then
// dropped), character data with the five predefined entities and character
// references resolved, CDATA sections; comments and processing instructions
// are skipped; a DTD or any other <!...> declaration is an error.
//
// It exists for speed: encoding/xml reads a byte at a time through an
// interface and allocates for every token, which made decoding a call (a
// signed credential of 10-20 KB escaped inside a <string>) the largest
// single cost of an AM API call. This scanner works on a slice, returns
// text that needs no unescaping as a sub-slice of the input, and names of
// XML-RPC's elements as constants, so a call costs a few allocations. Its
// agreement with encoding/xml is held by FuzzScanMatchesEncodingXML.
type scanner struct {
	data     []byte
	pos      int
	stack    []string // qualified names of the open elements
	pending  string   // an empty-element tag's end, returned next
	buf      []byte   // the last text with references resolved
	maxTag   int
	maxText  int // text resolved beyond this is cut at maxText+1 bytes: it will be refused
	tagStart int // where the last tag began (for the tag limit's error)
}

type tokenKind uint8

const (
	tokStart tokenKind = iota + 1
	tokEnd
	tokText
)

// token is one start tag, end tag or run of character data. Its text is
// never overwritten: a sub-slice of the input or a buffer of its own.
type token struct {
	kind tokenKind
	name string // local name of a start or end tag
	text []byte
}

// scanError is a syntax error at an offset of the input.
type scanError struct {
	msg string
	off int
}

func (e *scanError) Error() string { return e.msg }

func (s *scanner) fail(off int, format string, args ...any) error {
	return &scanError{msg: fmt.Sprintf(format, args...), off: off}
}

// line returns the 1-based line of offset off.
func (s *scanner) line(off int) int {
	if off > len(s.data) {
		off = len(s.data)
	}
	return 1 + bytes.Count(s.data[:off], []byte{'\n'})
}

// next returns the next token, or io.EOF at the end of a document whose
// elements are all closed.
func (s *scanner) next() (token, error) {
	if s.pending != "" {
		name := s.pending
		s.pending = ""
		return token{kind: tokEnd, name: name}, nil
	}
	for {
		if s.pos >= len(s.data) {
			if len(s.stack) > 0 {
				return token{}, s.fail(s.pos, "unexpected EOF")
			}
			return token{}, io.EOF
		}
		if s.data[s.pos] != '<' {
			return s.chars()
		}
		rest := s.data[s.pos+1:]
		switch {
		case len(rest) > 0 && rest[0] == '?':
			if err := s.procInst(); err != nil {
				return token{}, err
			}
		case bytes.HasPrefix(rest, []byte("!--")):
			// The first "--" must end the comment (XML 1.0 §2.5).
			end := bytes.Index(s.data[s.pos+4:], []byte("--"))
			if end < 0 || s.pos+4+end+2 >= len(s.data) {
				return token{}, s.fail(len(s.data), "unexpected EOF")
			}
			if s.data[s.pos+4+end+2] != '>' {
				return token{}, s.fail(s.pos+4+end, `invalid sequence "--" not allowed in comments`)
			}
			s.pos += 4 + end + 3
		case bytes.HasPrefix(rest, []byte("![CDATA[")):
			return s.cdata()
		case len(rest) > 0 && rest[0] == '!':
			return token{}, s.fail(s.pos, "DTD or other <!...> declaration not allowed")
		case len(rest) > 0 && rest[0] == '/':
			return s.endTag()
		default:
			return s.startTag()
		}
	}
}

// procInst skips <?target ...?>, checking the XML declaration's version and
// encoding as encoding/xml does (the encodings a UTF-8 document may carry).
func (s *scanner) procInst() error {
	start := s.pos
	end := bytes.Index(s.data[s.pos+2:], []byte("?>"))
	if end < 0 {
		return s.fail(len(s.data), "unexpected EOF")
	}
	body := s.data[s.pos+2 : s.pos+2+end]
	s.pos += 2 + end + 2
	// The target is the name at the start (as encoding/xml reads it: up to
	// the first byte that cannot be in a name).
	n := 0
	for n < len(body) && isNameByte(body[n]) {
		n++
	}
	target, content := body[:n], body[n:]
	if !isName(target) {
		return s.fail(start, "expected target name after <?")
	}
	if string(target) != "xml" {
		return nil
	}
	if v := pseudoAttr(content, "version"); v != "" && v != "1.0" {
		return s.fail(start, "unsupported version %q; only version 1.0 is supported", v)
	}
	if enc := pseudoAttr(content, "encoding"); enc != "" {
		switch strings.ToLower(enc) {
		case "utf-8", "utf8", "us-ascii", "ascii":
		default:
			return s.fail(start, "%v %q (send UTF-8)", errCharset, enc)
		}
	}
	return nil
}

// pseudoAttr finds name="value" (or 'value') in an XML declaration.
func pseudoAttr(content []byte, name string) string {
	for {
		i := bytes.Index(content, []byte(name))
		if i < 0 {
			return ""
		}
		rest := bytes.TrimLeft(content[i+len(name):], " \t\r\n")
		if len(rest) == 0 || rest[0] != '=' {
			content = content[i+len(name):]
			continue
		}
		rest = bytes.TrimLeft(rest[1:], " \t\r\n")
		if len(rest) == 0 || (rest[0] != '"' && rest[0] != '\'') {
			return ""
		}
		if j := bytes.IndexByte(rest[1:], rest[0]); j >= 0 {
			return string(rest[1 : 1+j])
		}
		return ""
	}
}

func (s *scanner) cdata() (token, error) {
	start := s.pos + len("<![CDATA[")
	end := bytes.Index(s.data[start:], []byte("]]>"))
	if end < 0 {
		return token{}, s.fail(len(s.data), "unexpected EOF in CDATA section")
	}
	s.pos = start + end + 3
	return s.text(start, start+end, false)
}

// chars returns the character data from s.pos to the next '<'.
func (s *scanner) chars() (token, error) {
	start := s.pos
	end := bytes.IndexByte(s.data[start:], '<')
	if end < 0 {
		end = len(s.data)
	} else {
		end += start
	}
	s.pos = end
	if i := bytes.Index(s.data[start:end], []byte("]]>")); i >= 0 {
		return token{}, s.fail(start+i, "unescaped ]]> not in CDATA section")
	}
	return s.text(start, end, true)
}

// text checks data[start:end] and resolves references (when refs) and line
// ends (\r\n and \r become \n, XML 1.0 §2.11).
func (s *scanner) text(start, end int, refs bool) (token, error) {
	raw := s.data[start:end]
	clean := true
	for i := 0; i < len(raw); {
		c := raw[i]
		if plainText[c] { // the common case first, a table lookup a byte
			i++
			continue
		}
		switch {
		case c == '&' && refs, c == '\r':
			clean = false
			i++
		case c >= 0x20 && c < utf8.RuneSelf, c == '\n', c == '\t':
			i++
		case c < 0x20:
			return token{}, s.fail(start+i, "illegal character code %U", rune(c))
		default:
			r, n := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && n == 1 {
				return token{}, s.fail(start+i, "invalid UTF-8")
			}
			if !isInCharacterRange(r) {
				return token{}, s.fail(start+i, "illegal character code %U", r)
			}
			i += n
		}
	}
	if clean {
		return token{kind: tokText, text: raw}, nil
	}
	// A fresh buffer, so that the text stays valid after the next token
	// (the decoder copies it into a string once).
	s.buf = make([]byte, 0, min(len(raw), s.maxText+1))
	for i := 0; i < len(raw); {
		if len(s.buf) > s.maxText {
			break // the decoder refuses it, naming the element
		}
		j := 0
		for i+j < len(raw) && raw[i+j] != '\r' && (raw[i+j] != '&' || !refs) {
			j++
		}
		if i+j == len(raw) {
			s.buf = append(s.buf, raw[i:]...)
			break
		}
		s.buf = append(s.buf, raw[i:i+j]...)
		i += j
		if raw[i] == '\r' {
			s.buf = append(s.buf, '\n')
			i++
			if i < len(raw) && raw[i] == '\n' {
				i++
			}
			continue
		}
		r, n, err := s.reference(raw[i:], start+i)
		if err != nil {
			return token{}, err
		}
		s.buf = utf8.AppendRune(s.buf, r)
		i += n
	}
	return token{kind: tokText, text: s.buf}, nil
}

// plainText marks the bytes that text may hold as they are: printable
// ASCII but '&', tab and newline.
var plainText = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '&'
	}
	t['\t'], t['\n'] = true, true
	return t
}()

// reference reads the entity or character reference at the start of b
// ("&lt;", "&#60;", "&#x3c;") and returns its character and length.
func (s *scanner) reference(b []byte, off int) (rune, int, error) {
	semi := bytes.IndexByte(b, ';')
	if semi < 0 || semi > 16 {
		return 0, 0, s.fail(off, "invalid character entity %s (no semicolon)", truncate(string(b[:min(len(b), 16)])))
	}
	name := b[1:semi]
	switch string(name) {
	case "lt":
		return '<', semi + 1, nil
	case "gt":
		return '>', semi + 1, nil
	case "amp":
		return '&', semi + 1, nil
	case "apos":
		return '\'', semi + 1, nil
	case "quot":
		return '"', semi + 1, nil
	}
	if len(name) > 1 && name[0] == '#' {
		var n uint64
		var err error
		if name[1] == 'x' {
			n, err = strconv.ParseUint(string(name[2:]), 16, 32)
		} else {
			n, err = strconv.ParseUint(string(name[1:]), 10, 32)
		}
		if err == nil && !strings.ContainsAny(string(name[1:2]), "+-") {
			if !isInCharacterRange(rune(n)) {
				return 0, 0, s.fail(off, "illegal character code %U", rune(n))
			}
			return rune(n), semi + 1, nil
		}
	}
	return 0, 0, s.fail(off, "invalid character entity &%s;", truncate(string(name)))
}

func (s *scanner) checkTagLen() error {
	if s.pos-s.tagStart > s.maxTag {
		return s.fail(s.tagStart, "a tag longer than the limit of %d bytes (XML-RPC has no use for attributes)", s.maxTag)
	}
	return nil
}

// startTag reads <name attr="value" ...> or <name .../>.
func (s *scanner) startTag() (token, error) {
	s.tagStart = s.pos
	s.pos++ // '<'
	qname, err := s.name()
	if err != nil {
		return token{}, err
	}
	for {
		s.space()
		if err := s.checkTagLen(); err != nil {
			return token{}, err
		}
		if s.pos >= len(s.data) {
			return token{}, s.fail(s.pos, "unexpected EOF")
		}
		switch s.data[s.pos] {
		case '>':
			s.pos++
			s.stack = append(s.stack, qname)
			return token{kind: tokStart, name: localName(qname)}, nil
		case '/':
			if s.pos+1 >= len(s.data) || s.data[s.pos+1] != '>' {
				return token{}, s.fail(s.pos, "expected /> in element")
			}
			s.pos += 2
			s.pending = localName(qname)
			return token{kind: tokStart, name: s.pending}, nil
		}
		if err := s.attribute(); err != nil {
			return token{}, err
		}
	}
}

// attribute reads and checks name="value" (or 'value'); XML-RPC has no
// use for the value.
func (s *scanner) attribute() error {
	start := s.pos
	if _, err := s.name(); err != nil {
		return err
	}
	s.space()
	if s.pos >= len(s.data) || s.data[s.pos] != '=' {
		return s.fail(start, "attribute name without = in element")
	}
	s.pos++
	s.space()
	if s.pos >= len(s.data) || (s.data[s.pos] != '"' && s.data[s.pos] != '\'') {
		return s.fail(start, "unquoted or missing attribute value in element")
	}
	quote := s.data[s.pos]
	end := bytes.IndexByte(s.data[s.pos+1:], quote)
	if end < 0 {
		return s.fail(len(s.data), "unexpected EOF")
	}
	value := s.data[s.pos+1 : s.pos+1+end]
	if i := bytes.IndexByte(value, '<'); i >= 0 {
		return s.fail(s.pos+1+i, "unescaped < inside quoted string")
	}
	if _, err := s.text(s.pos+1, s.pos+1+end, true); err != nil {
		return err
	}
	s.pos += 1 + end + 1
	return s.checkTagLen()
}

// endTag reads </name> and checks that it closes the innermost open element.
func (s *scanner) endTag() (token, error) {
	s.tagStart = s.pos
	s.pos += 2 // "</"
	qname, err := s.name()
	if err != nil {
		return token{}, err
	}
	s.space()
	if s.pos >= len(s.data) {
		return token{}, s.fail(s.pos, "unexpected EOF")
	}
	if s.data[s.pos] != '>' {
		return token{}, s.fail(s.pos, "invalid characters between </%s and >", truncate(qname))
	}
	s.pos++
	if len(s.stack) == 0 {
		return token{}, s.fail(s.tagStart, "unexpected end element </%s>", truncate(qname))
	}
	if open := s.stack[len(s.stack)-1]; open != qname {
		return token{}, s.fail(s.tagStart, "element <%s> closed by </%s>", truncate(open), truncate(qname))
	}
	s.stack = s.stack[:len(s.stack)-1]
	return token{kind: tokEnd, name: localName(qname)}, nil
}

func (s *scanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

// name reads an XML name at s.pos. The element names of XML-RPC come back
// as constants, so that they cost no allocation.
func (s *scanner) name() (string, error) {
	start := s.pos
	for s.pos < len(s.data) && s.pos-start <= s.maxTag && isNameByte(s.data[s.pos]) {
		s.pos++
	}
	b := s.data[start:s.pos]
	if s.pos-start > s.maxTag {
		return "", s.fail(start, "a tag longer than the limit of %d bytes (XML-RPC has no use for attributes)", s.maxTag)
	}
	if !isName(b) || bytes.Count(b, []byte(":")) > 1 {
		if s.pos >= len(s.data) {
			return "", s.fail(s.pos, "unexpected EOF")
		}
		return "", s.fail(start, "invalid XML name: %q", truncate(string(b)))
	}
	if known, ok := knownNames[string(b)]; ok {
		return known, nil
	}
	return string(b), nil
}

// knownNames are the element names of XML-RPC (and its nil extension).
var knownNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"methodCall", "methodName", "methodResponse", "params", "param", "value", "struct",
		"member", "name", "array", "data", "string", "int", "i4", "i8", "boolean", "double", "base64",
		"dateTime.iso8601", "nil", "ex:nil", "fault"} {
		m[n] = n
	}
	return m
}()

// localName strips a namespace prefix (ex:nil is nil), as encoding/xml's
// Name.Local does.
func localName(q string) string {
	if i := strings.IndexByte(q, ':'); i >= 1 && i < len(q)-1 {
		return q[i+1:]
	}
	return q
}

func isNameByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == ':' ||
		c == '.' || c == '-' || c >= utf8.RuneSelf
}

// isName reports whether b is an XML name (XML 1.0 §2.3), as encoding/xml
// checks it.
func isName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); {
		r, n := rune(b[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return false
			}
		}
		ok := r == '_' || r == ':' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r >= utf8.RuneSelf && isNameRune(r)
		if i > 0 && !ok {
			ok = r == '-' || r == '.' || '0' <= r && r <= '9' || r == 0xB7
		}
		if !ok {
			return false
		}
		i += n
	}
	return true
}

// isNameRune: the non-ASCII name characters of XML 1.0 fifth edition.
func isNameRune(r rune) bool {
	return r >= 0xC0 && r <= 0xD6 || r >= 0xD8 && r <= 0xF6 || r >= 0xF8 && r <= 0x2FF ||
		r >= 0x300 && r <= 0x36F || r >= 0x370 && r <= 0x37D || r >= 0x37F && r <= 0x1FFF ||
		r >= 0x200C && r <= 0x200D || r >= 0x203F && r <= 0x2040 || r >= 0x2070 && r <= 0x218F ||
		r >= 0x2C00 && r <= 0x2FEF || r >= 0x3001 && r <= 0xD7FF || r >= 0xF900 && r <= 0xFDCF ||
		r >= 0xFDF0 && r <= 0xFFFD || r >= 0x10000 && r <= 0xEFFFF
}

// isInCharacterRange: the characters XML 1.0 allows (§2.2).
func isInCharacterRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}
