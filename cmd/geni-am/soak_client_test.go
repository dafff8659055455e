package main

// The soak's client: XML-RPC over TLS with alice's certificate, every answer
// classified as a GENI answer (by geni_code) or not (transport, HTTP status,
// XML-RPC fault, malformed body, unknown geni_code).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
)

// Kinds of answer that are not a GENI return struct.
const (
	soakTransport = "transport" // no answer: connect, TLS, reset, timeout
	soakHTTP      = "http"      // an HTTP status other than 200
	soakXMLFault  = "fault"     // an XML-RPC fault instead of a return struct
	soakMalformed = "malformed" // not XML-RPC, not a return struct, or an unknown geni_code
)

// soakAnswer is one call as the client saw it.
type soakAnswer struct {
	Method     string
	AM         int // index of the aggregate called
	Start, End time.Time
	GENI       bool    // a v3 return struct with a known geni_code
	Code       am.Code // its geni_code
	Kind       string  // when !GENI: soakTransport, soakHTTP, soakXMLFault or soakMalformed
	Msg        string  // output, or what went wrong
	Value      any     // the return struct's value when Code is 0
}

// OK is a GENI success.
func (a *soakAnswer) OK() bool { return a.GENI && a.Code == am.Success }

// Label is how the answer is counted.
func (a *soakAnswer) Label() string {
	if a.GENI {
		return a.Code.String()
	}
	return "non-GENI " + a.Kind
}

// soakRPC calls one aggregate with its own keep-alive connection.
type soakRPC struct {
	am   *soakAM
	http *http.Client
}

func soakNewRPC(a *soakAM, timeout time.Duration) *soakRPC {
	tr := &http.Transport{TLSClientConfig: a.tlsCfg.Clone(), MaxIdleConnsPerHost: 1, TLSHandshakeTimeout: timeout}
	return &soakRPC{am: a, http: &http.Client{Transport: tr, Timeout: timeout}}
}

func (c *soakRPC) close() { c.http.CloseIdleConnections() }

// soakMaxResponse bounds an answer (the advertisement of six nodes is small).
const soakMaxResponse = 8 << 20

// call posts a methodCall and returns the decoded XML-RPC value.
func (c *soakRPC) call(ctx context.Context, method string, params ...any) (any, error) {
	var body bytes.Buffer
	if err := xmlrpc.EncodeCall(&body, method, params...); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.am.url(), &body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &soakError{soakTransport, err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &soakError{soakHTTP, resp.Status + ": " + string(b)}
	}
	v, err := xmlrpc.DecodeResponse(io.LimitReader(resp.Body, soakMaxResponse), xmlrpc.Limits{MaxStringLen: soakMaxResponse})
	var fault *xmlrpc.Fault
	switch {
	case errors.As(err, &fault):
		return nil, &soakError{soakXMLFault, strconv.Itoa(fault.Code) + " " + fault.String}
	case err != nil:
		return nil, &soakError{soakMalformed, err.Error()}
	}
	return v, nil
}

type soakError struct{ kind, msg string }

func (e *soakError) Error() string { return e.kind + ": " + e.msg }

// callAM makes an AM API v3 call and classifies its answer.
func (c *soakRPC) callAM(ctx context.Context, amIndex int, method string, params ...any) *soakAnswer {
	a := &soakAnswer{Method: method, AM: amIndex, Start: time.Now()}
	v, err := c.call(ctx, method, params...)
	a.End = time.Now()
	var se *soakError
	switch {
	case errors.As(err, &se):
		a.Kind, a.Msg = se.kind, se.msg
		return a
	case err != nil:
		a.Kind, a.Msg = soakTransport, err.Error()
		return a
	}
	ret, ok := v.(map[string]any)
	code, _ := ret["code"].(map[string]any)
	n, isInt := code["geni_code"].(int64)
	switch {
	case !ok:
		a.Kind, a.Msg = soakMalformed, fmt.Sprintf("the answer is a %T, not a return struct", v)
	case !isInt:
		a.Kind, a.Msg = soakMalformed, "the return struct has no integer geni_code"
	case !am.Code(n).Known():
		a.Kind, a.Msg = soakMalformed, fmt.Sprintf("unknown geni_code %d", n)
	default:
		a.GENI, a.Code = true, am.Code(n)
		a.Msg, _ = ret["output"].(string)
		if a.Code == am.Success {
			a.Value = ret["value"]
		}
	}
	return a
}

// soakCredArg is the v3 credentials argument with one SFA credential.
func soakCredArg(xml string) []any {
	return []any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": xml}}
}

// soakRSpecOpt is the geni_rspec_version option.
func soakRSpecOpt() map[string]any {
	return map[string]any{"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}}
}

// soakSlivers reads geni_slivers from a value (Allocate, Provision: a struct
// holding them; Renew, Delete: the list itself): URN → geni_error ("" when
// the sliver's call succeeded).
func soakSlivers(v any) map[string]string {
	list, ok := v.([]any)
	if m, isMap := v.(map[string]any); isMap {
		list, ok = m["geni_slivers"].([]any)
	}
	out := map[string]string{}
	if !ok {
		return out
	}
	for _, e := range list {
		s, _ := e.(map[string]any)
		urn, _ := s["geni_sliver_urn"].(string)
		if urn == "" {
			continue
		}
		msg, _ := s["geni_error"].(string)
		out[urn] = msg
	}
	return out
}
