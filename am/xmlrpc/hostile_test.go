package xmlrpc

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// repeatReader yields head, then fill repeated, up to n bytes, then tail,
// without ever holding the whole document.
type repeatReader struct {
	head, fill, tail string
	n, off           int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	k := 0
	for k < len(p) {
		switch {
		case r.off < len(r.head):
			c := copy(p[k:], r.head[r.off:])
			k, r.off = k+c, r.off+c
		case r.off < r.n:
			i := (r.off - len(r.head)) % len(r.fill)
			s := r.fill[i:]
			if rest := r.n - r.off; len(s) > rest {
				s = s[:rest]
			}
			c := copy(p[k:], s)
			k, r.off = k+c, r.off+c
		case r.off < r.n+len(r.tail):
			c := copy(p[k:], r.tail[r.off-r.n:])
			k, r.off = k+c, r.off+c
		default:
			if k == 0 {
				return 0, io.EOF
			}
			return k, nil
		}
	}
	return k, nil
}

func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHugeDocumentsBounded: the decoder holds the document in memory, so a
// document longer than MaxDocLen is refused as soon as that much has been
// read, whatever it holds; within it, strings, names and tags still have
// their own limits.
func TestHugeDocumentsBounded(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation bounds are not measurable under the race detector")
	}
	const huge = 50 << 20
	const big = 10 << 20 // over MaxStringLen (8 MiB), under MaxDocLen (16 MiB + 64 KiB)
	head := "<methodCall><methodName>m</methodName><params><param><value>"
	docLimit := "document longer than the limit of 16842752 bytes"
	cases := []struct {
		name string
		r    io.Reader
		msg  string
	}{
		{"50 MB string", &repeatReader{head: head + "<string>", fill: "0123456789", n: huge, tail: "</string></value></param></params></methodCall>"}, docLimit},
		{"50 MB of attributes", &repeatReader{head: "<methodCall ", fill: `a="b" `, n: huge, tail: "><methodName>m</methodName></methodCall>"}, docLimit},
		{"50 MB DOCTYPE", &repeatReader{head: `<!DOCTYPE methodCall [<!ENTITY a "`, fill: "a", n: huge, tail: `">]><methodCall><methodName>m</methodName></methodCall>`}, docLimit},
		{"10 MB string", &repeatReader{head: head + "<string>", fill: "0123456789", n: big, tail: "</string></value></param></params></methodCall>"},
			"<string> longer than the limit of 8388608 bytes"},
		{"10 MB untyped string", &repeatReader{head: head, fill: "x", n: big, tail: "</value></param></params></methodCall>"},
			"string longer than the limit of 8388608 bytes"},
		{"10 MB member name", &repeatReader{head: head + "<struct><member><name>", fill: "n", n: big, tail: "</name><value/></member></struct></value></param></params></methodCall>"},
			"<name> longer than the limit of 8388608 bytes"},
		{"10 MB of attributes", &repeatReader{head: "<methodCall ", fill: `a="b" `, n: big, tail: "><methodName>m</methodName></methodCall>"},
			"a tag longer than the limit of 16384 bytes"},
		{"10 MB tag name", &repeatReader{head: "<methodCall", fill: "a", n: big, tail: "><methodName>m</methodName></methodCall>"},
			"a tag longer than the limit of 16384 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = DecodeCall(c.r, Limits{}) })
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want %q", err, c.msg)
			}
			if _, ok := err.(*SyntaxError); !ok {
				t.Errorf("%T is not a *SyntaxError", err)
			}
			t.Logf("%s: allocated %.1f MiB", c.name, float64(n)/(1<<20))
			// Reading doubles its buffer up to the document limit of 16 MiB:
			// about 32 MiB in all, plus the string kept, whatever the input.
			if n > 64<<20 {
				t.Errorf("allocated %.1f MiB, want at most 64 MiB", float64(n)/(1<<20))
			}
		})
	}
	// A string just under the limit, escaped as an RSpec in a string is
	// (13 bytes sent for 7 kept), still fits in a piece.
	s := strings.Repeat("&lt;node/&gt;", (4<<20)/7)
	call, err := DecodeCall(strings.NewReader(head+"<string>"+s+"</string></value></param></params></methodCall>"), Limits{MaxStringLen: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got := call.Params[0].(string); len(got) != (4<<20)/7*7 || !strings.HasPrefix(got, "<node/><node/>") {
		t.Errorf("escaped string decoded to %d bytes", len(got))
	}
	// Tags of the usual length, a namespaced nil among them, trip nothing;
	// a comment or CDATA section is not a tag.
	doc := `<?xml version="1.0" encoding="UTF-8"?><!-- ` + strings.Repeat("c", 100<<10) + ` --><methodCall><methodName>m</methodName><params>` +
		`<param><value><ex:nil xmlns:ex="http://ws.apache.org/xmlrpc/namespaces/extensions"/></value></param>` +
		`<param><value><string><![CDATA[` + strings.Repeat("<x>", 100<<10) + `]]></string></value></param></params></methodCall>`
	if call, err = DecodeCall(strings.NewReader(doc), Limits{}); err != nil {
		t.Fatal(err)
	}
	if len(call.Params) != 2 || call.Params[0] != nil || len(call.Params[1].(string)) != 300<<10 {
		t.Errorf("decoded %v", call.Params)
	}
}

// TestByteOrderMark: a UTF-8 BOM may begin a document (XML 1.0 §4.3.3),
// before or without an XML declaration; anywhere else it is text.
func TestByteOrderMark(t *testing.T) {
	for _, doc := range []string{
		"\ufeff<methodCall><methodName>m</methodName></methodCall>",
		"\ufeff<?xml version=\"1.0\"?>\n<methodCall><methodName>m</methodName></methodCall>",
		"\ufeff \n<methodCall><methodName>m</methodName></methodCall>",
	} {
		if call, err := DecodeCall(strings.NewReader(doc), Limits{}); err != nil || call.Method != "m" {
			t.Errorf("%q: %v", doc, err)
		}
	}
	for _, doc := range []string{
		"\ufeff\ufeff<methodCall><methodName>m</methodName></methodCall>",
		"<methodCall>\ufeff<methodName>m</methodName></methodCall>",
	} {
		if _, err := DecodeCall(strings.NewReader(doc), Limits{}); err == nil {
			t.Errorf("%q decoded", doc)
		}
	}
	call, err := DecodeCall(strings.NewReader("<methodCall><methodName>m</methodName><params><param><value>\ufeffx</value></param></params></methodCall>"), Limits{})
	if err != nil || call.Params[0] != "\ufeffx" {
		t.Errorf("BOM in a string: %v %q", err, call.Params)
	}
}

// TestAnnouncedSizeNotTrusted: a client that announces a large body
// (Content-Length) and sends little must not make the reader allocate what
// it announced; the buffer grows with what arrives.
func TestAnnouncedSizeNotTrusted(t *testing.T) {
	sent := strings.Repeat("x", 1000)
	doc, err := ReadDocument(strings.NewReader(sent), nil, 4<<20, Limits{MaxDocLen: 8 << 20})
	if err != nil || string(doc) != sent {
		t.Fatalf("read %d bytes, %v", len(doc), err)
	}
	if cap(doc) > 64<<10 {
		t.Errorf("announced 4 MiB, sent 1,000 bytes: the buffer holds %d bytes, want at most 64 KiB", cap(doc))
	}
	// What arrives in full is read in buffers of about 4/3 its length.
	big := strings.Repeat("y", 3<<20)
	var got []byte
	n := allocated(func() { got, err = ReadDocument(strings.NewReader(big), nil, len(big), Limits{MaxDocLen: 8 << 20}) })
	if err != nil || len(got) != len(big) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if n > uint64(len(big))*3/2 {
		t.Errorf("3 MiB read with %d bytes allocated, want at most 1.5 times", n)
	}
	// Longer than announced (a caller's wrong hint) still reads it all.
	if got, err = ReadDocument(strings.NewReader(big), nil, 1000, Limits{MaxDocLen: 8 << 20}); err != nil || len(got) != len(big) {
		t.Fatalf("past the hint: read %d bytes, %v", len(got), err)
	}
}
