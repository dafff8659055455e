package geniapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials/devpki"
)

// This file holds the machinery of the hostile-input tests (hostile_test.go):
// a real mutual-TLS server with short timeouts and a record of its
// connections, raw TLS clients that write exactly the bytes a test wants, and
// memory measurement.

// longForm reports whether GENIAM_LONG=1 asks for the big numbers.
func longForm() bool { return os.Getenv("GENIAM_LONG") == "1" }

// scale picks the short or the long figure.
func scale(short, long int) int {
	if longForm() {
		return long
	}
	return short
}

// hostilePKI is issued once per test binary: 1024-bit keys keep thousands of
// handshakes affordable on a loaded machine (Go accepts 1024 bits).
type hostilePKI struct {
	server, alice tls.Certificate
	pool          *x509.CertPool
	caPEM         []byte
}

// hostilePKIOnce makes the PKI once for all the hostile tests.
var hostilePKIOnce = sync.OnceValues(makeHostilePKI)

func getHostilePKI(t testing.TB) *hostilePKI {
	t.Helper()
	pki, err := hostilePKIOnce()
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

func makeHostilePKI() (*hostilePKI, error) {
	ca, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+example+authority+ca", CommonName: "hostile CA", KeyBits: 1024})
	if err != nil {
		return nil, err
	}
	srv, err := ca.Issue(devpki.Options{URN: amURN, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyBits: 1024})
	if err != nil {
		return nil, err
	}
	alice, err := ca.Issue(devpki.Options{URN: aliceURN, Email: "alice@example.org", KeyBits: 1024})
	if err != nil {
		return nil, err
	}
	p := &hostilePKI{caPEM: ca.CertPEM(), pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Cert)
	if p.server, err = tls.X509KeyPair(srv.ChainPEM(), srv.KeyPEM()); err != nil {
		return nil, err
	}
	if p.alice, err = tls.X509KeyPair(alice.ChainPEM(), alice.KeyPEM()); err != nil {
		return nil, err
	}
	return p, nil
}

// hostileOptions configure startHostile. Zero timeouts keep NewServer's.
type hostileOptions struct {
	api     am.API
	handler HandlerOptions
	timeouts
}

type timeouts struct {
	readHeader, read, write, idle time.Duration
}

// shortTimeouts make the server's cut-offs observable within seconds.
// WriteTimeout runs from the end of the request's headers, ReadTimeout from
// the start of the connection: the write timeout is the longer one so that a
// reply to a body cut off by ReadTimeout can still be written.
var shortTimeouts = timeouts{readHeader: time.Second, read: 2 * time.Second, write: 4 * time.Second, idle: time.Second}

// hostileServer is NewServer on 127.0.0.1 with the real TLS configuration.
type hostileServer struct {
	addr  string
	url   string
	srv   *http.Server
	logs  *logBuffer
	conns *connTracker
	pki   *hostilePKI
	fake  *fakeAM
}

func startHostile(t testing.TB, o hostileOptions) *hostileServer {
	t.Helper()
	p := getHostilePKI(t)
	log, logs := newLogger()
	hs := &hostileServer{logs: logs, pki: p, conns: newConnTracker()}
	if o.api == nil {
		hs.fake = &fakeAM{}
		o.api = hs.fake
	}
	o.handler.Logger = log
	rootsDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(rootsDir, "ca.pem"), p.caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	roots := loadRoots(t, rootsDir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs.addr = ln.Addr().String()
	hs.url = "https://" + hs.addr + "/"
	hs.srv = NewServer(hs.addr, NewHandler(o.api, o.handler), ServerTLSConfig(p.server, roots, false, log))
	// http.Server's own log ("http: panic serving ...", handshake errors)
	// goes to the same buffer, so a panic that escaped the handler shows too.
	hs.srv.ErrorLog = stdlog.New(logs, "http.Server: ", 0)
	for _, f := range []struct {
		dst *time.Duration
		v   time.Duration
	}{{&hs.srv.ReadHeaderTimeout, o.readHeader}, {&hs.srv.ReadTimeout, o.read}, {&hs.srv.WriteTimeout, o.write}, {&hs.srv.IdleTimeout, o.idle}} {
		if f.v > 0 {
			*f.dst = f.v
		}
	}
	hs.srv.ConnState = hs.conns.hook
	go func() { _ = hs.srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := hs.srv.Shutdown(ctx); err != nil {
			_ = hs.srv.Close()
		}
		hs.assertNoPanic(t)
	})
	return hs
}

// assertNoPanic fails the test if the handler's recover had to act: a panic
// is a bug even when the caller got a clean SERVERERROR.
func (hs *hostileServer) assertNoPanic(t testing.TB) {
	t.Helper()
	if l := hs.logs.String(); strings.Contains(l, "panic") || strings.Contains(l, "cannot encode") {
		t.Errorf("the server log shows a panic or an encoding failure:\n%.4000s", l)
	}
}

func (hs *hostileServer) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: hs.pki.pool, Certificates: []tls.Certificate{hs.pki.alice}, ServerName: "127.0.0.1"}
}

// dial opens a mutual-TLS connection and finishes the handshake.
func (hs *hostileServer) dial(t testing.TB) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", hs.addr, hs.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// httpClient is a normal client (keep-alive, HTTP/1.1) for the server.
func (hs *hostileServer) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: hs.clientTLS()}, Timeout: 30 * time.Second}
}

// connTracker records the server's connection states (http.Server.ConnState).
type connTracker struct {
	mu      sync.Mutex
	opened  map[net.Conn]time.Time
	lived   []time.Duration // lifetimes of closed connections
	open    int
	active  int
	total   int
	changed chan struct{}
}

func newConnTracker() *connTracker {
	return &connTracker{opened: map[net.Conn]time.Time{}, changed: make(chan struct{}, 1)}
}

func (c *connTracker) hook(conn net.Conn, state http.ConnState) {
	c.mu.Lock()
	switch state {
	case http.StateNew:
		c.opened[conn] = time.Now()
		c.open++
		c.total++
	case http.StateActive:
		c.active++
	case http.StateClosed, http.StateHijacked:
		if t, ok := c.opened[conn]; ok {
			c.lived = append(c.lived, time.Since(t))
			delete(c.opened, conn)
			c.open--
		}
	}
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *connTracker) counts() (open, total, active int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open, c.total, c.active
}

// waitOpen waits until at most n connections are open on the server and
// returns how long that took, or fails after limit.
func (c *connTracker) waitOpen(t testing.TB, n int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		if open, _, _ := c.counts(); open <= n {
			return time.Since(start)
		}
		select {
		case <-c.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			open, total, _ := c.counts()
			t.Fatalf("after %v the server still has %d connections open (want <= %d; %d seen)", limit, open, n, total)
		}
	}
}

// maxLifetime is the longest lifetime among closed connections.
func (c *connTracker) maxLifetime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m time.Duration
	for _, d := range c.lived {
		m = max(m, d)
	}
	return m
}

// memFigure is what a piece of work cost in memory: every byte allocated
// (TotalAlloc, an upper bound of any peak) and the highest sampled HeapInuse
// above the starting point.
type memFigure struct {
	alloc     uint64
	peakInuse uint64
}

func (m memFigure) String() string {
	return fmt.Sprintf("allocated %s, peak heap in use +%s", mib(m.alloc), mib(m.peakInuse))
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// measureMem runs f and reports its memory cost (of the whole process:
// server and client both).
func measureMem(f func()) memFigure {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > before.HeapInuse && ms.HeapInuse-before.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse - before.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	<-sampled
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if after.HeapInuse > before.HeapInuse && after.HeapInuse-before.HeapInuse > peak.Load() {
		peak.Store(after.HeapInuse - before.HeapInuse)
	}
	return memFigure{alloc: after.TotalAlloc - before.TotalAlloc, peakInuse: peak.Load()}
}

// checkMem fails the test if the figure exceeds the bounds (allocated in
// all, and peak in use), and logs it either way for the report.
func checkMem(t testing.TB, what string, m memFigure, maxAlloc, maxPeak uint64) {
	t.Helper()
	t.Logf("memory %s: %s (bounds %s, %s)", what, m, mib(maxAlloc), mib(maxPeak))
	if m.alloc > maxAlloc {
		t.Errorf("%s allocated %s, more than the bound of %s", what, mib(m.alloc), mib(maxAlloc))
	}
	if m.peakInuse > maxPeak {
		t.Errorf("%s had a peak of %s in use, more than the bound of %s", what, mib(m.peakInuse), mib(maxPeak))
	}
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard one and returns it.
func raiseNoFile() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}

// rawRequest is an HTTP/1.1 POST of body as a client would write it.
func rawRequest(addr string, body []byte) []byte {
	return []byte(fmt.Sprintf("POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", addr, len(body), body))
}

// readReply reads one HTTP response from br and, if it is an XML-RPC reply,
// decodes it: a *xmlrpc.Fault in err, or the value.
func readReply(t testing.TB, br *bufio.Reader, method string) (*http.Response, any, error) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/xml") {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp, nil, nil
	}
	v, err := xmlrpc.DecodeResponse(resp.Body, xmlrpc.Limits{})
	return resp, v, err
}

// wantFault checks that err is an XML-RPC fault with code whose string
// contains every one of msgs.
func wantFault(t testing.TB, what string, err error, code int, msgs ...string) {
	t.Helper()
	f, ok := err.(*xmlrpc.Fault)
	if !ok {
		t.Errorf("%s: got %v, want fault %d", what, err, code)
		return
	}
	if f.Code != code {
		t.Errorf("%s: fault %d %q, want code %d", what, f.Code, f.String, code)
	}
	for _, m := range msgs {
		if !strings.Contains(f.String, m) {
			t.Errorf("%s: fault %q does not mention %q", what, f.String, m)
		}
	}
}

// waitClosed reads from c until the peer closes it (EOF or reset) and
// returns how long that took, or fails after limit.
func waitClosed(t testing.TB, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the server kept the connection open for more than %v", limit)
		}
		return time.Since(start)
	}
}

// patternReader yields prefix, then filler repeated up to n bytes in total
// (prefix included), without holding more than one copy of filler.
type patternReader struct {
	prefix []byte
	filler []byte
	n      int64
	off    int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	written := 0
	for written < len(p) && r.off < r.n {
		var src []byte
		if r.off < int64(len(r.prefix)) {
			src = r.prefix[r.off:]
		} else {
			i := (r.off - int64(len(r.prefix))) % int64(len(r.filler))
			src = r.filler[i:]
		}
		if rest := r.n - r.off; int64(len(src)) > rest {
			src = src[:rest]
		}
		k := copy(p[written:], src)
		written += k
		r.off += int64(k)
	}
	return written, nil
}
