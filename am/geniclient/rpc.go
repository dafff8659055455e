package geniclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
)

// maxResponseBytes bounds one answer: a large advertisement fits, a runaway
// server does not exhaust the client's memory.
const maxResponseBytes = 64 << 20

// TLSConfig is the client side of GENI's mutual TLS: the user's certificate
// (with its chain) and key. Like omni, the server is not checked unless
// caFile names the roots to check its chain against: aggregates are named by
// URN, and the gcf AM's certificate carries no host name.
func TLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("user certificate %s / key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true} // replaced by VerifyPeerCertificate below when roots are given
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error { return VerifyChain(raw, roots) }
	return cfg, nil
}

// VerifyChain checks the chain a server sent against roots, without a host
// name (GENI servers are named by the URN in their certificate).
func VerifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("server sent no certificate")
	}
	inter := x509.NewCertPool()
	var leaf *x509.Certificate
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("server certificate %d: %w", i, err)
		}
		if i == 0 {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// NewHTTPClient is an HTTP client for one user's TLS identity.
func NewHTTPClient(tlsConf *tls.Config, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tlsConf,
		TLSHandshakeTimeout: timeout, ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 1}}
}

// TransportError is a call that got no XML-RPC answer: connection, TLS,
// HTTP status, or a body that is not XML-RPC.
type TransportError struct {
	Method, URL string
	Err         error
}

func (e *TransportError) Error() string { return fmt.Sprintf("%s at %s: %v", e.Method, e.URL, e.Err) }
func (e *TransportError) Unwrap() error { return e.Err }

// HTTPStatusError is an answer with an HTTP status other than 200 (inside a
// TransportError).
type HTTPStatusError struct {
	Code   int
	Status string // "503 Service Unavailable"
	Body   string // its start
}

func (e *HTTPStatusError) Error() string { return fmt.Sprintf("HTTP %s: %s", e.Status, e.Body) }

// ErrNotXMLRPC is in a TransportError whose answer was not XML-RPC.
var ErrNotXMLRPC = errors.New("not an XML-RPC answer")

// FaultError is an XML-RPC fault: the server did not understand the call
// (gcf's clearinghouse also reports refusals this way, with a geni_code).
type FaultError struct {
	Method string
	Code   int
	Msg    string
}

func (e *FaultError) Error() string {
	return fmt.Sprintf("%s: XML-RPC fault %d: %s", e.Method, e.Code, e.Msg)
}

// GENIError is an AM API v3 answer whose geni_code is not 0.
type GENIError struct {
	Method string
	Code   int
	AMType string
	AMCode any
	Output string
	Value  any
}

// logIDPattern finds the log id an aggregate quotes in its output (geniam
// writes "log id 0123456789ab"); other aggregates have none.
var logIDPattern = regexp.MustCompile(`log id ([0-9a-fA-F]{6,})`)

// LogID is the log id quoted in the error's output, or "".
func (e *GENIError) LogID() string {
	if m := logIDPattern.FindStringSubmatch(e.Output); m != nil {
		return m[1]
	}
	return ""
}

// Label is the geni_code's name as the spec writes it (e.g. SEARCHFAILED).
func (e *GENIError) Label() string { return CodeLabel(e.Code) }

func (e *GENIError) Error() string {
	s := fmt.Sprintf("%s: %s (geni_code %d)", e.Method, e.Label(), e.Code)
	if e.Output != "" {
		s += ": " + e.Output
	}
	if id := e.LogID(); id != "" && !logIDPattern.MatchString(s) {
		s += " (log id " + id + ")"
	}
	return s
}

// Retryable says whether a call that failed with err may succeed when made
// again as it is: there was no answer, or the aggregate said BUSY or
// SERVERBUSY.
func Retryable(err error) bool {
	var ge *GENIError
	var te *TransportError
	return errors.As(err, &te) || errors.As(err, &ge) && (am.Code(ge.Code) == am.Busy || am.Code(ge.Code) == am.ServerBusy)
}

// CodeLabel names a geni_code.
func CodeLabel(code int) string {
	if c := am.Code(code); c.Known() {
		return c.String()
	}
	return "geni_code " + strconv.Itoa(code)
}

// RPC calls one XML-RPC endpoint.
type RPC struct {
	URL  string
	HTTP *http.Client
}

// Call posts one methodCall and returns the value of the answer.
func (c *RPC) Call(ctx context.Context, method string, params ...any) (any, error) {
	p, err := Prepare(method, params...)
	if err != nil {
		return nil, err
	}
	return c.Send(ctx, p)
}

// Prepared is a methodCall encoded once, to be sent any number of times (the
// bench sends the same Allocate again and again, as pgbench sends prepared
// statements, so that its CPU goes to sending rather than to escaping the
// same credential each time).
type Prepared struct {
	Method string
	Body   []byte
}

// Prepare encodes a methodCall.
func Prepare(method string, params ...any) (Prepared, error) {
	var body bytes.Buffer
	if err := xmlrpc.EncodeCall(&body, method, params...); err != nil {
		return Prepared{}, err
	}
	return Prepared{Method: method, Body: body.Bytes()}, nil
}

// Send posts a prepared methodCall and returns the value of the answer.
func (c *RPC) Send(ctx context.Context, p Prepared) (any, error) {
	method := p.Method
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(p.Body))
	if err != nil {
		return nil, &TransportError{method, c.URL, err}
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, &TransportError{method, c.URL, err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		// The rest is read (up to a limit) so that the connection can be
		// used again: the bench counts handshakes.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil, &TransportError{method, c.URL, &HTTPStatusError{Code: resp.StatusCode, Status: resp.Status, Body: string(bytes.TrimSpace(msg))}}
	}
	v, err := xmlrpc.DecodeResponse(io.LimitReader(resp.Body, maxResponseBytes), xmlrpc.Limits{MaxStringLen: maxResponseBytes})
	var fault *xmlrpc.Fault
	switch {
	case errors.As(err, &fault):
		return nil, &FaultError{Method: method, Code: fault.Code, Msg: fault.String}
	case err != nil:
		return nil, &TransportError{method, c.URL, fmt.Errorf("%w: %w", ErrNotXMLRPC, err)}
	}
	return v, nil
}

// Result is a successful AM API v3 answer.
type Result struct {
	Value  any
	Output string
	AMType string
}

// CallV3 makes an AM API v3 call: an answer with geni_code 0 is a *Result,
// another code a *GENIError, anything that is not a v3 return struct a
// *TransportError.
func (c *RPC) CallV3(ctx context.Context, method string, params ...any) (*Result, error) {
	v, err := c.Call(ctx, method, params...)
	if err != nil {
		return nil, err
	}
	r, err := ReturnValue(method, v)
	var ge *GENIError
	if err != nil && !errors.As(err, &ge) {
		return nil, &TransportError{method, c.URL, err}
	}
	return r, err
}

// ReturnValue reads an AM API v3 return struct {code: {geni_code, am_type,
// am_code}, value, output}: geni_code 0 is a *Result, another code a
// *GENIError; any other error says v is not a v3 return struct at all.
func ReturnValue(method string, v any) (*Result, error) {
	ret, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the answer is %s, not an AM API v3 return struct", TypeName(v))
	}
	code, ok := ret["code"].(map[string]any)
	if !ok {
		return nil, errors.New("the return struct has no code struct")
	}
	n, ok := code["geni_code"].(int64)
	if !ok {
		return nil, errors.New("the code struct has no integer geni_code")
	}
	out, _ := ret["output"].(string)
	amType, _ := code["am_type"].(string)
	if n != 0 {
		return nil, &GENIError{Method: method, Code: int(n), AMType: amType, AMCode: code["am_code"], Output: out, Value: ret["value"]}
	}
	return &Result{Value: ret["value"], Output: out, AMType: amType}, nil
}

// TypeName names the XML-RPC type of a decoded value with its article ("a
// string", "an array"), for messages.
func TypeName(v any) string {
	name := xmlrpc.TypeName(v)
	switch {
	case v == nil:
		return name
	case strings.ContainsRune("aeiou", rune(name[0])):
		return "an " + name
	}
	return "a " + name
}
