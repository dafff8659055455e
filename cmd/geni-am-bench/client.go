package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/geniclient"
	"github.com/geniam/geniam/credentials/devpki"
)

// maxResponseBytes bounds what one response may hold: a large advertisement
// fits, a runaway server does not exhaust the bench's memory.
const maxResponseBytes = 64 << 20

// Kinds of a failed call. A GENI answer with geni_code != 0 is kindGENI; the
// others are answers that are not AM API v3 return structs at all.
const (
	kindGENI      = "geni"
	kindFault     = "fault"     // an XML-RPC fault
	kindHTTP      = "http"      // an HTTP status other than 200
	kindTransport = "transport" // no answer: connect, TLS, timeout
	kindMalformed = "malformed" // not XML-RPC, or not a v3 return struct
	kindBadValue  = "bad-value" // geni_code 0 but a value the call cannot have
)

// callError is a call that did not succeed.
type callError struct {
	Method string
	Kind   string
	Code   int    // geni_code (kindGENI), fault code (kindFault) or HTTP status (kindHTTP)
	Msg    string // output, faultString, or the Go error
}

func (e *callError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Method, e.Label(), e.Msg)
}

// Label is how the error is counted: by geni_code for GENI answers, by kind
// (and code) for the rest.
func (e *callError) Label() string {
	switch e.Kind {
	case kindGENI:
		if !am.Code(e.Code).Known() {
			return "geni_code " + strconv.Itoa(e.Code)
		}
		return fmt.Sprintf("%s(%d)", am.Code(e.Code), e.Code)
	case kindFault, kindHTTP:
		return "non-GENI " + e.Kind + " " + strconv.Itoa(e.Code)
	}
	return "non-GENI " + e.Kind
}

// errorKey is the key an error is counted under in a row's error map.
func errorKey(err error) string {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.Method + " " + ce.Label()
	}
	return err.Error()
}

// tlsOptions say how the bench authenticates and what server it trusts.
type tlsOptions struct {
	CertFile, KeyFile string // the caller's certificate (chain) and key
	CAFile            string // verify the server's chain against these roots; "" = no check (as omni)
}

// clientTLSConfig builds the TLS client configuration. GENI aggregates are
// named by URN, not by host name, so with a CA file only the chain is
// checked, not the name (the gcf AM's certificate has no IP or DNS name).
// There is no session cache: every new connection is a full handshake with
// client authentication, which is what a new-connection benchmark must cost.
func clientTLSConfig(o tlsOptions) (*tls.Config, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("--cert and --key are required: the AM API authenticates callers by TLS client certificate")
	}
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below when a CA is given
		MinVersion:         tls.VersionTLS12,
	}
	if o.CAFile == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, err
	}
	cas, err := devpki.ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.CAFile, err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		return geniclient.VerifyChain(raw, roots)
	}
	return cfg, nil
}

// rpcClient calls one XML-RPC endpoint. Each benchmark client has its own,
// so with keep-alive each holds its own connection.
type rpcClient struct {
	url        string
	http       *http.Client
	handshakes *atomic.Int64 // TLS handshakes made, shared by the clients of a scenario
}

func newRPCClient(url string, tlsCfg *tls.Config, keepAlive bool, timeout time.Duration, handshakes *atomic.Int64) *rpcClient {
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg.Clone(),
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 1,
		ForceAttemptHTTP2:   false,
		TLSHandshakeTimeout: timeout,
	}
	if handshakes == nil {
		handshakes = new(atomic.Int64)
	}
	return &rpcClient{url: url, http: &http.Client{Transport: tr, Timeout: timeout}, handshakes: handshakes}
}

func (c *rpcClient) close() { c.http.CloseIdleConnections() }

// call posts one methodCall and returns the XML-RPC value of the answer.
func (c *rpcClient) call(ctx context.Context, method string, params ...any) (any, error) {
	p, err := geniclient.Prepare(method, params...)
	if err != nil {
		return nil, &callError{Method: method, Kind: kindMalformed, Msg: err.Error()}
	}
	return c.send(ctx, p)
}

// send posts a prepared methodCall (geniclient.Prepared: encoded once per
// client, so that the load generator's CPU goes to sending) and returns the
// XML-RPC value of the answer.
func (c *rpcClient) send(ctx context.Context, p geniclient.Prepared) (any, error) {
	method := p.Method
	trace := &httptrace.ClientTrace{TLSHandshakeDone: func(tls.ConnectionState, error) { c.handshakes.Add(1) }}
	rpc := geniclient.RPC{URL: c.url, HTTP: c.http}
	v, err := rpc.Send(httptrace.WithClientTrace(ctx, trace), p)
	if err == nil {
		return v, nil
	}
	var (
		fault  *geniclient.FaultError
		status *geniclient.HTTPStatusError
		te     *geniclient.TransportError
	)
	switch {
	case errors.As(err, &fault):
		return nil, &callError{Method: method, Kind: kindFault, Code: fault.Code, Msg: fault.Msg}
	case errors.As(err, &status):
		return nil, &callError{Method: method, Kind: kindHTTP, Code: status.Code, Msg: status.Status}
	case !errors.As(err, &te): // the call could not be encoded
		return nil, &callError{Method: method, Kind: kindMalformed, Msg: err.Error()}
	case errors.Is(te.Err, geniclient.ErrNotXMLRPC):
		return nil, &callError{Method: method, Kind: kindMalformed, Msg: te.Err.Error()}
	}
	return nil, &callError{Method: method, Kind: kindTransport, Msg: te.Err.Error()}
}

// callAM makes an AM API v3 call and returns the value of its return struct
// when geni_code is 0; anything else is a *callError.
func (c *rpcClient) callAM(ctx context.Context, method string, params ...any) (any, error) {
	v, err := c.call(ctx, method, params...)
	if err != nil {
		return nil, err
	}
	return geniValue(method, v)
}

// sendAM is callAM for a prepared call.
func (c *rpcClient) sendAM(ctx context.Context, p geniclient.Prepared) (any, error) {
	v, err := c.send(ctx, p)
	if err != nil {
		return nil, err
	}
	return geniValue(p.Method, v)
}

// geniValue is the value of a v3 return struct (geniclient.ReturnValue),
// its failures as callErrors.
func geniValue(method string, v any) (any, error) {
	r, err := geniclient.ReturnValue(method, v)
	var ge *geniclient.GENIError
	switch {
	case errors.As(err, &ge):
		return nil, &callError{Method: method, Kind: kindGENI, Code: ge.Code, Msg: ge.Output}
	case err != nil:
		return nil, &callError{Method: method, Kind: kindMalformed, Msg: err.Error()}
	}
	return r.Value, nil
}
