// Package xmlrpc is the XML-RPC codec of the aggregate's front end, on the
// standard library (decoding through a strict tokenizer of its own, scan.go).
// It decodes a <methodCall> into Go values (the mapping below)
// and encodes a <methodResponse> or a <fault> from Go values, in the manner of
// encoding/json:
//
//	XML-RPC                      Go (decoding)     Go (encoding)
//	<string>, untyped <value>    string            string
//	<int> <i4> <i8>              int64             any integer kind (<int>, or <i8> past int32)
//	<boolean>                    bool              bool
//	<double>                     float64           float32, float64 (finite only)
//	<base64>                     []byte            []byte
//	<dateTime.iso8601>           time.Time         time.Time (sent in UTC)
//	<struct>                     map[string]any    map[string]T, Go structs (`xmlrpc:"name,omitempty"`)
//	<array>                      []any             slices and arrays
//	<nil/> <ex:nil/>             nil               nil pointer or interface (nil slices and maps are empty)
//
// The decoder is meant for untrusted input: it refuses DTDs (and with them
// entity expansion attacks), undefined entities and malformed XML, and bounds
// nesting depth, the number of values and the length of strings (Limits).
// kolo/xmlrpc was not used because it cannot decode a call and loses data on
// empty values, untyped strings, base64 and CDATA (docs: research go-deps §1).
package xmlrpc

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits bound what a decoder accepts. A zero field takes its default.
//
// The decoder holds the whole document in memory while it decodes it, so
// MaxDocLen bounds the memory a call can make it use; any tag longer than
// 16 KiB is refused too.
type Limits struct {
	MaxDepth     int // nesting of arrays and structs; default 64
	MaxValues    int // <value> elements in the document; default 100,000
	MaxStringLen int // bytes in one string, base64 text or member name; default 8 MiB
	MaxDocLen    int // bytes in the document as sent; default 2*MaxStringLen+64 KiB (room for escapes such as &lt;)
}

// Defaults of Limits.
const (
	DefaultMaxDepth     = 64
	DefaultMaxValues    = 100_000
	DefaultMaxStringLen = 8 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxValues <= 0 {
		l.MaxValues = DefaultMaxValues
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = DefaultMaxStringLen
	}
	if l.MaxDocLen <= 0 {
		l.MaxDocLen = 2*l.MaxStringLen + 64<<10
	}
	return l
}

// Call is a decoded <methodCall>.
type Call struct {
	Method string
	Params []any
}

// Fault is an XML-RPC fault, as DecodeResponse returns it.
type Fault struct {
	Code   int
	String string
}

func (f *Fault) Error() string { return fmt.Sprintf("xmlrpc fault %d: %s", f.Code, f.String) }

// SyntaxError is returned for input that is not a well-formed XML-RPC document
// or exceeds a limit. Other errors (from the reader) are returned as they are.
type SyntaxError struct {
	Msg  string
	Line int // line of the input where the problem was found, when known
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("xmlrpc: line %d: %s", e.Line, e.Msg)
	}
	return "xmlrpc: " + e.Msg
}

// DecodeCall reads one <methodCall> from r.
func DecodeCall(r io.Reader, lim Limits) (*Call, error) {
	lim = lim.withDefaults()
	doc, err := read(r, lim)
	if err != nil {
		return nil, err
	}
	return decodeCall(newDecoder(doc, lim))
}

// DecodeCallBytes decodes the <methodCall> doc, which it does not keep (a
// caller may reuse it).
func DecodeCallBytes(doc []byte, lim Limits) (*Call, error) {
	lim = lim.withDefaults()
	if len(doc) > lim.MaxDocLen {
		return nil, errDocLen(lim)
	}
	return decodeCall(newDecoder(doc, lim))
}

func decodeCall(d *decoder) (*Call, error) {
	if err := d.expectStart("methodCall"); err != nil {
		return nil, err
	}
	if err := d.expectStart("methodName"); err != nil {
		return nil, err
	}
	name, err := d.text("methodName")
	if err != nil {
		return nil, err
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, d.errorf("empty methodName")
	}
	call := &Call{Method: name, Params: []any{}}
	tok, err := d.nextElement()
	if err != nil {
		return nil, err
	}
	if tok.kind == tokStart {
		if tok.name != "params" {
			return nil, d.errorf("unexpected <%s> in methodCall, want <params>", tok.name)
		}
		if call.Params, err = d.params(); err != nil {
			return nil, err
		}
		if tok, err = d.nextElement(); err != nil {
			return nil, err
		}
	}
	if tok.kind != tokEnd || tok.name != "methodCall" {
		return nil, d.errorf("unexpected %s in methodCall", describe(tok))
	}
	return call, d.expectEOF()
}

// DecodeResponse reads one <methodResponse> from r and returns its value, or a
// *Fault when the response is a fault.
func DecodeResponse(r io.Reader, lim Limits) (any, error) {
	lim = lim.withDefaults()
	doc, err := read(r, lim)
	if err != nil {
		return nil, err
	}
	d := newDecoder(doc, lim)
	if err := d.expectStart("methodResponse"); err != nil {
		return nil, err
	}
	tok, err := d.nextElement()
	if err != nil {
		return nil, err
	}
	if tok.kind != tokStart {
		return nil, d.errorf("empty methodResponse")
	}
	var result any
	var fault *Fault
	switch tok.name {
	case "params":
		params, err := d.params()
		if err != nil {
			return nil, err
		}
		if len(params) != 1 {
			return nil, d.errorf("methodResponse has %d params, want 1", len(params))
		}
		result = params[0]
	case "fault":
		if err := d.expectStart("value"); err != nil {
			return nil, err
		}
		v, err := d.value(0)
		if err != nil {
			return nil, err
		}
		if fault, err = faultOf(v); err != nil {
			return nil, d.errorf("%v", err)
		}
		if err := d.expectEnd("fault"); err != nil {
			return nil, err
		}
	default:
		return nil, d.errorf("unexpected <%s> in methodResponse", tok.name)
	}
	if err := d.expectEnd("methodResponse"); err != nil {
		return nil, err
	}
	if err := d.expectEOF(); err != nil {
		return nil, err
	}
	if fault != nil {
		return nil, fault
	}
	return result, nil
}

func faultOf(v any) (*Fault, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("fault value is not a struct")
	}
	code, ok := m["faultCode"].(int64)
	if !ok {
		return nil, errors.New("fault has no integer faultCode")
	}
	s, ok := m["faultString"].(string)
	if !ok {
		return nil, errors.New("fault has no string faultString")
	}
	return &Fault{Code: int(code), String: s}, nil
}

type decoder struct {
	s      scanner
	lim    Limits
	values int
}

// errCharset: an XML declaration names an encoding other than UTF-8 (or its
// ASCII subset).
var errCharset = errors.New("unsupported encoding")

// maxTagLen bounds one tag: XML-RPC's tags are short and have no attributes
// (but for a namespace declaration on <ex:nil/>).
const maxTagLen = 16 << 10

// read reads the document r into memory.
func read(r io.Reader, lim Limits) ([]byte, error) {
	size := 0
	if b, ok := r.(interface{ Len() int }); ok {
		size = b.Len()
	}
	return ReadDocument(r, nil, size, lim)
}

// ReadDocument appends the document r to buf (which may be nil, or a
// buffer kept for reuse), refusing one longer than lim.MaxDocLen with a
// *SyntaxError. size, when known (a Content-Length), is not trusted in
// advance: the buffer grows fourfold as bytes arrive, and to the announced
// size once a sixteenth of it has arrived, so a client that announces a
// large body and sends little makes the reader hold at most sixteen times
// what it sent (and never more than the limit), while a document costs
// about 1.1 to 1.3 times its length in buffers.
func ReadDocument(r io.Reader, buf []byte, size int, lim Limits) ([]byte, error) {
	lim = lim.withDefaults()
	limit := lim.MaxDocLen + 1 // one byte more tells a document that is too long
	start := len(buf)
	// next is the buffer's next capacity (of the document's part): four
	// times the last, or the announced size (and one byte more, so that
	// Read can say EOF) once what has arrived is a sixteenth of it; never
	// past the limit.
	next := func(c int) int {
		n := 4 * c
		if size > 0 && size+1 > c && (n >= size+1 || 16*c >= size+1) {
			n = size + 1
		}
		return min(n, limit)
	}
	grow := func(want int) {
		if cap(buf)-start < want {
			grown := make([]byte, len(buf), start+want)
			copy(grown, buf)
			buf = grown
		}
	}
	first := initialRead
	if size > 0 {
		first = min(first, size+1)
	}
	grow(min(first, limit))
	for {
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf)-start > lim.MaxDocLen {
			return nil, errDocLen(lim)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			grow(next(cap(buf) - start))
		}
	}
}

// initialRead is the first buffer of ReadDocument: a usual call (a signed
// credential, an RSpec) fits.
const initialRead = 64 << 10

func errDocLen(lim Limits) error {
	return &SyntaxError{Msg: fmt.Sprintf("document longer than the limit of %d bytes", lim.MaxDocLen)}
}

func newDecoder(doc []byte, lim Limits) *decoder {
	// XML allows a UTF-8 document to begin with a byte order mark (XML 1.0
	// §4.3.3).
	pos := 0
	if bytes.HasPrefix(doc, []byte("\ufeff")) {
		pos = len("\ufeff")
	}
	return &decoder{s: scanner{data: doc, pos: pos, maxTag: maxTagLen, maxText: lim.MaxStringLen}, lim: lim}
}

func (d *decoder) errorf(format string, args ...any) error {
	return &SyntaxError{Msg: fmt.Sprintf(format, args...), Line: d.s.line(d.s.pos)}
}

// token returns the next token.
func (d *decoder) token() (token, error) {
	tok, err := d.s.next()
	if se, ok := err.(*scanError); ok {
		return tok, &SyntaxError{Msg: se.msg, Line: d.s.line(se.off)}
	}
	return tok, err
}

// nextElement returns the next start or end element, allowing only
// whitespace text before it.
func (d *decoder) nextElement() (token, error) {
	for {
		tok, err := d.token()
		if err == io.EOF {
			return tok, d.errorf("unexpected end of document")
		}
		if err != nil {
			return tok, err
		}
		if tok.kind == tokText {
			if !isSpace(tok.text) {
				return tok, d.errorf("unexpected text %q", truncate(string(tok.text)))
			}
			continue
		}
		return tok, nil
	}
}

func (d *decoder) expectStart(name string) error { return d.expectTag(name, false) }

func (d *decoder) expectEnd(name string) error { return d.expectTag(name, true) }

// expectTag reads the next element token and refuses anything but the start
// (or, with end, the end) of the element name.
func (d *decoder) expectTag(name string, end bool) error {
	tok, err := d.nextElement()
	if err != nil {
		return err
	}
	if tok.name == name && (tok.kind == tokEnd) == end {
		return nil
	}
	want := "<" + name + ">"
	if end {
		want = "</" + name + ">"
	}
	return d.errorf("unexpected %s, want %s", describe(tok), want)
}

func (d *decoder) expectEOF() error {
	for {
		tok, err := d.token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if tok.kind != tokText || !isSpace(tok.text) {
			return d.errorf("unexpected %s after the document", describe(tok))
		}
	}
}

// text reads character data up to the end of the element name, refusing
// child elements and strings longer than the limit.
func (d *decoder) text(name string) (string, error) {
	var b []byte
	tok, err := d.token()
	for {
		if err == io.EOF {
			return "", d.errorf("unexpected end of document in <%s>", name)
		}
		if err != nil {
			return "", err
		}
		switch tok.kind {
		case tokStart:
			return "", d.errorf("unexpected <%s> in <%s>", tok.name, name)
		case tokEnd:
			return string(b), nil
		}
		if len(b)+len(tok.text) > d.lim.MaxStringLen {
			return "", d.errorf("<%s> longer than the limit of %d bytes", name, d.lim.MaxStringLen)
		}
		text := tok.text
		tok, err = d.token()
		if b == nil && err == nil && tok.kind == tokEnd {
			return string(text), nil // the usual case: one run of text, one copy
		}
		b = append(b, text...)
	}
}

// params reads <param><value>…</value></param>* up to </params>.
func (d *decoder) params() ([]any, error) {
	params := []any{}
	for {
		tok, err := d.nextElement()
		if err != nil {
			return nil, err
		}
		if tok.kind == tokEnd {
			return params, nil // the scanner has checked it closes <params>
		}
		if tok.name != "param" {
			return nil, d.errorf("unexpected <%s> in <params>, want <param>", tok.name)
		}
		if err := d.expectStart("value"); err != nil {
			return nil, err
		}
		v, err := d.value(0)
		if err != nil {
			return nil, err
		}
		if err := d.expectEnd("param"); err != nil {
			return nil, err
		}
		params = append(params, v)
	}
}

// value decodes the content of a <value> whose start tag has been read,
// through its end tag. depth is the number of enclosing arrays and structs.
func (d *decoder) value(depth int) (any, error) {
	d.values++
	if d.values > d.lim.MaxValues {
		return nil, d.errorf("more than the limit of %d values", d.lim.MaxValues)
	}
	// Text before a type element: an untyped string (kept as is, whitespace
	// included) when no element follows, or ignorable whitespace when one does.
	var untyped []byte
	for {
		tok, err := d.token()
		if err == io.EOF {
			return nil, d.errorf("unexpected end of document in <value>")
		}
		if err != nil {
			return nil, err
		}
		switch tok.kind {
		case tokText:
			if len(untyped)+len(tok.text) > d.lim.MaxStringLen {
				return nil, d.errorf("string longer than the limit of %d bytes", d.lim.MaxStringLen)
			}
			untyped = append(untyped, tok.text...)
		case tokEnd:
			return string(untyped), nil
		case tokStart:
			if !isSpace(untyped) {
				return nil, d.errorf("text %q before <%s> in <value>", truncate(string(untyped)), tok.name)
			}
			v, err := d.typed(tok.name, depth)
			if err != nil {
				return nil, err
			}
			return v, d.expectEnd("value")
		}
	}
}

// typed decodes the element <typ> whose start tag has been read.
func (d *decoder) typed(typ string, depth int) (any, error) {
	switch typ {
	case "struct":
		if depth+1 > d.lim.MaxDepth {
			return nil, d.errorf("nesting deeper than the limit of %d", d.lim.MaxDepth)
		}
		return d.structure(depth + 1)
	case "array":
		if depth+1 > d.lim.MaxDepth {
			return nil, d.errorf("nesting deeper than the limit of %d", d.lim.MaxDepth)
		}
		return d.array(depth + 1)
	case "nil":
		s, err := d.text(typ)
		if err != nil {
			return nil, err
		}
		if !isSpace([]byte(s)) {
			return nil, d.errorf("<nil> with content")
		}
		return nil, nil
	}
	s, err := d.text(typ)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "string":
		return s, nil
	case "int", "i4", "i8":
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, d.errorf("bad <%s> %q", typ, truncate(s))
		}
		return n, nil
	case "boolean":
		switch strings.TrimSpace(s) {
		case "1", "true":
			return true, nil
		case "0", "false":
			return false, nil
		}
		return nil, d.errorf("bad <boolean> %q (want 0 or 1)", truncate(s))
	case "double":
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, d.errorf("bad <double> %q", truncate(s))
		}
		return f, nil
	case "base64":
		b, err := decodeBase64(s)
		if err != nil {
			return nil, d.errorf("bad <base64>: %v", err)
		}
		return b, nil
	case "dateTime.iso8601":
		t, err := ParseDateTime(strings.TrimSpace(s))
		if err != nil {
			return nil, d.errorf("bad <dateTime.iso8601> %q", truncate(s))
		}
		return t, nil
	}
	return nil, d.errorf("unknown value type <%s>", typ)
}

func (d *decoder) structure(depth int) (map[string]any, error) {
	m := map[string]any{}
	for {
		tok, err := d.nextElement()
		if err != nil {
			return nil, err
		}
		if tok.kind == tokEnd {
			return m, nil
		}
		{
			if tok.name != "member" {
				return nil, d.errorf("unexpected <%s> in <struct>, want <member>", tok.name)
			}
			if err := d.expectStart("name"); err != nil {
				return nil, err
			}
			name, err := d.text("name")
			if err != nil {
				return nil, err
			}
			if err := d.expectStart("value"); err != nil {
				return nil, d.errorf("member %q: %v", truncate(name), err)
			}
			v, err := d.value(depth)
			if err != nil {
				return nil, err
			}
			if err := d.expectEnd("member"); err != nil {
				return nil, err
			}
			m[name] = v // a repeated name keeps the last value, as Python does
		}
	}
}

func (d *decoder) array(depth int) ([]any, error) {
	items := []any{}
	tok, err := d.nextElement()
	if err != nil {
		return nil, err
	}
	if tok.kind == tokEnd {
		return items, nil // <array/>: tolerated as empty
	}
	if tok.name != "data" {
		return nil, d.errorf("unexpected %s in <array>, want <data>", describe(tok))
	}
	for {
		tok, err := d.nextElement()
		if err != nil {
			return nil, err
		}
		if tok.kind == tokEnd { // </data>
			return items, d.expectEnd("array")
		}
		{
			if tok.name != "value" {
				return nil, d.errorf("unexpected <%s> in <data>, want <value>", tok.name)
			}
			v, err := d.value(depth)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
		}
	}
}

func decodeBase64(s string) ([]byte, error) {
	clean := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, s)
	if b, err := base64.StdEncoding.DecodeString(clean); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(clean)
}

// dateTimeLayouts are the forms of <dateTime.iso8601> seen in the wild: the
// spec's 19980717T14:08:55, the ISO basic and extended forms, each with no
// zone (UTC), "Z", "+01:00" or "+0100". Fractional seconds are accepted by
// time.Parse after the seconds field without being in the layout.
var dateTimeLayouts = func() []string {
	var out []string
	for _, base := range []string{"20060102T15:04:05", "20060102T150405", "2006-01-02T15:04:05", "2006-01-02T150405"} {
		for _, zone := range []string{"", "Z07:00", "Z0700"} {
			out = append(out, base+zone)
		}
	}
	return out
}()

// ParseDateTime parses the text of a <dateTime.iso8601>. A time without a
// zone is taken as UTC.
func ParseDateTime(s string) (time.Time, error) {
	for _, layout := range dateTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("xmlrpc: bad dateTime %q", s)
}

func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func describe(tok token) string {
	switch tok.kind {
	case tokStart:
		return "<" + tok.name + ">"
	case tokEnd:
		return "</" + tok.name + ">"
	}
	return fmt.Sprintf("text %q", truncate(string(tok.text)))
}
