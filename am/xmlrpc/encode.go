package xmlrpc

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// An UnsupportedValueError is returned when a value cannot be encoded.
type UnsupportedValueError struct {
	Path string // where in the value, e.g. "value.geni_slivers[2]"
	Msg  string
}

func (e *UnsupportedValueError) Error() string {
	return fmt.Sprintf("xmlrpc: cannot encode %s: %s", e.Path, e.Msg)
}

const maxEncodeDepth = 256 // guards against cyclic pointers and maps

// EncodeResponse writes a <methodResponse> carrying v. Nothing is written
// when v cannot be encoded.
func EncodeResponse(w io.Writer, v any) error {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?>` + "\n<methodResponse><params><param><value>")
	if err := encodeValue(&b, reflect.ValueOf(v), "value", 0); err != nil {
		return err
	}
	b.WriteString("</value></param></params></methodResponse>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// EncodeFault writes a <methodResponse> carrying a fault.
func EncodeFault(w io.Writer, code int, msg string) error {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?>` + "\n<methodResponse><fault><value><struct>")
	b.WriteString("<member><name>faultCode</name><value><int>")
	b.WriteString(strconv.Itoa(code))
	b.WriteString("</int></value></member><member><name>faultString</name><value><string>")
	escape(&b, msg)
	b.WriteString("</string></value></member></struct></value></fault></methodResponse>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// EncodeCall writes a <methodCall> (used by tests and clients).
func EncodeCall(w io.Writer, method string, params ...any) error {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0"?>` + "\n<methodCall><methodName>")
	escape(&b, method)
	b.WriteString("</methodName><params>")
	for i, p := range params {
		b.WriteString("<param><value>")
		if err := encodeValue(&b, reflect.ValueOf(p), fmt.Sprintf("param[%d]", i), 0); err != nil {
			return err
		}
		b.WriteString("</value></param>")
	}
	b.WriteString("</params></methodCall>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// Marshal returns the <value> content of v: the XML-RPC encoding of one value.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := encodeValue(&b, reflect.ValueOf(v), "value", 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// escape writes s as XML character data, escaping only what XML needs: &
// and <, > (so "]]>" cannot appear), and \r as a character reference so a
// CRLF in an RSpec survives the receiver's end-of-line normalisation.
// Characters XML cannot carry become U+FFFD. Quotes, tabs and newlines are
// written as they are: encoding/xml.EscapeText writes each as a reference,
// which makes a 1,000-node advertisement 40% longer, and it is 4 times
// slower than this (it was the biggest cost of a cached ListResources).
func escape(b *bytes.Buffer, s string) {
	b.Grow(len(s))
	done := 0 // s[:done] is written
	for i := 0; i < len(s); {
		for i < len(s) && plainByte[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		c := s[i]
		var ref string
		width := 1
		switch {
		case c == '&':
			ref = "&amp;"
		case c == '<':
			ref = "&lt;"
		case c == '>':
			ref = "&gt;"
		case c == '\r':
			ref = "&#xD;"
		case c < 0x20:
			ref = "\uFFFD"
		default:
			r, w := utf8.DecodeRuneInString(s[i:])
			if (r != utf8.RuneError || w > 1) && xmlChar(r) {
				i += w
				continue
			}
			ref, width = "\uFFFD", w
		}
		b.WriteString(s[done:i])
		b.WriteString(ref)
		i += width
		done = i
	}
	b.WriteString(s[done:])
}

// plainByte marks the bytes escape copies as they are: printable ASCII but
// & < >, and tab and newline.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '&' && c != '<' && c != '>'
	}
	t['\t'], t['\n'] = true, true
	return t
}()

// xmlChar reports whether XML 1.0 can carry r (its Char production).
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || (r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

var timeType = reflect.TypeOf(time.Time{})

func encodeValue(b *bytes.Buffer, v reflect.Value, path string, depth int) error {
	if depth > maxEncodeDepth {
		return &UnsupportedValueError{path, "nested too deeply (cycle?)"}
	}
	if !v.IsValid() {
		b.WriteString("<nil/>")
		return nil
	}
	if v.Type() == timeType {
		t := v.Interface().(time.Time).UTC()
		b.WriteString("<dateTime.iso8601>")
		b.WriteString(t.Format("20060102T15:04:05"))
		b.WriteString("</dateTime.iso8601>")
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("<nil/>")
			return nil
		}
		return encodeValue(b, v.Elem(), path, depth+1)
	case reflect.String:
		b.WriteString("<string>")
		escape(b, v.String())
		b.WriteString("</string>")
	case reflect.Bool:
		if v.Bool() {
			b.WriteString("<boolean>1</boolean>")
		} else {
			b.WriteString("<boolean>0</boolean>")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		writeInt(b, v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := v.Uint()
		if u > math.MaxInt64 {
			return &UnsupportedValueError{path, fmt.Sprintf("%d overflows i8", u)}
		}
		writeInt(b, int64(u))
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return &UnsupportedValueError{path, fmt.Sprintf("%v is not a finite double", f)}
		}
		b.WriteString("<double>")
		b.WriteString(strconv.FormatFloat(f, 'f', -1, 64))
		b.WriteString("</double>")
	case reflect.Slice, reflect.Array:
		// A nil slice is an empty array (not <nil/>): XML-RPC nil is an
		// extension GENI clients do not expect where a list is due.
		if v.Type().Elem().Kind() == reflect.Uint8 {
			raw := make([]byte, v.Len())
			reflect.Copy(reflect.ValueOf(raw), v)
			b.WriteString("<base64>")
			b.WriteString(base64.StdEncoding.EncodeToString(raw))
			b.WriteString("</base64>")
			return nil
		}
		b.WriteString("<array><data>")
		for i := 0; i < v.Len(); i++ {
			b.WriteString("<value>")
			if err := encodeValue(b, v.Index(i), path+"["+strconv.Itoa(i)+"]", depth+1); err != nil {
				return err
			}
			b.WriteString("</value>")
		}
		b.WriteString("</data></array>")
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return &UnsupportedValueError{path, "map key type " + v.Type().Key().String() + " is not a string"}
		}
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		b.WriteString("<struct>")
		for _, k := range keys {
			kv := reflect.ValueOf(k).Convert(v.Type().Key())
			if err := writeMember(b, k, v.MapIndex(kv), path, depth); err != nil {
				return err
			}
		}
		b.WriteString("</struct>")
	case reflect.Struct:
		b.WriteString("<struct>")
		for _, f := range fieldsOf(v.Type()) {
			fv := v.Field(f.index)
			if f.omitEmpty && isEmpty(fv) {
				continue
			}
			if err := writeMember(b, f.name, fv, path, depth); err != nil {
				return err
			}
		}
		b.WriteString("</struct>")
	default:
		return &UnsupportedValueError{path, "type " + v.Type().String() + " has no XML-RPC form"}
	}
	return nil
}

func writeMember(b *bytes.Buffer, name string, v reflect.Value, path string, depth int) error {
	b.WriteString("<member><name>")
	escape(b, name)
	b.WriteString("</name><value>")
	if err := encodeValue(b, v, path+"."+name, depth+1); err != nil {
		return err
	}
	b.WriteString("</value></member>")
	return nil
}

func writeInt(b *bytes.Buffer, n int64) {
	// GENI clients expect <int>; <i8> only where a value does not fit.
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		b.WriteString("<int>")
		b.WriteString(strconv.FormatInt(n, 10))
		b.WriteString("</int>")
		return
	}
	b.WriteString("<i8>")
	b.WriteString(strconv.FormatInt(n, 10))
	b.WriteString("</i8>")
}

func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map, reflect.Array, reflect.String:
		return v.Len() == 0
	}
	return v.IsZero()
}

type field struct {
	name      string
	index     int
	omitEmpty bool
}

var fieldCache sync.Map // reflect.Type → []field

// fieldsOf lists the encoded fields of a struct type: exported fields, named
// by their `xmlrpc:"name,omitempty"` tag or their Go name; "-" skips one.
func fieldsOf(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("xmlrpc")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		}
		fs = append(fs, field{name: name, index: i, omitEmpty: opts == "omitempty"})
	}
	fieldCache.Store(t, fs)
	return fs
}
