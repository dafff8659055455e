// Package geniapi is the XML-RPC over TLS front end of the aggregate: the AM
// API v3 as GENI clients (omni, the acceptance tests, jFed) speak it. It
// decodes a call, checks its arguments, calls am.API and encodes the v3
// return struct {code, value, output}. It holds no state and makes no trust
// decision beyond naming the caller: credentials and the sliver lifecycle are
// the am.API implementation's business.
package geniapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials"
)

// DefaultMaxBodyBytes bounds a request body unless HandlerOptions says
// otherwise: a request RSpec for a few hundred nodes fits easily.
const DefaultMaxBodyBytes = 4 << 20

// XML-RPC fault codes, from the "specification for fault code
// interoperability" that Python and Apache XML-RPC follow. Faults are only for
// calls that cannot be read; everything else gets a v3 return struct.
const (
	FaultParse          = -32700 // not well-formed XML-RPC
	FaultInvalidRequest = -32600 // e.g. body over the limit
	FaultUnknownMethod  = -32601
	FaultInternal       = -32603
)

// HandlerOptions configure NewHandler. The zero value is usable.
type HandlerOptions struct {
	MaxBodyBytes int64         // request body limit; default DefaultMaxBodyBytes
	Limits       xmlrpc.Limits // decoder limits; zero fields take xmlrpc's defaults
	Logger       *slog.Logger  // default slog.Default()
	// Auditor, when set, receives every call once its reply is built (see
	// am.AuditRecord); calls refused as XML-RPC faults are audited too.
	Auditor am.Auditor
}

// Handler serves the AM API v3 over XML-RPC. The request must come over TLS
// with a client certificate (see ServerTLSConfig) that names a GENI URN.
type Handler struct {
	api  am.API
	opts HandlerOptions
	log  *slog.Logger
}

// NewHandler returns the XML-RPC handler for api.
func NewHandler(api am.API, opts HandlerOptions) *Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Handler{api: api, opts: opts, log: log}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A chunked request may have come with a Content-Length too, which
	// net/http drops without a trace: RFC 9112 §6.3 wants the connection
	// closed after such a request, lest a request smuggled behind the last
	// chunk be served. GENI clients send a Content-Length, so closing after
	// every chunked request costs them nothing.
	if len(r.TransferEncoding) > 0 {
		w.Header().Set("Connection", "close")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "the AM API is XML-RPC: POST a methodCall", http.StatusMethodNotAllowed)
		return
	}
	logID := am.NewLogID()
	started := time.Now()
	call, err := h.decode(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		var syntax *xmlrpc.SyntaxError
		code, msg := FaultParse, ""
		switch {
		case errors.As(err, &tooBig):
			code, msg = FaultInvalidRequest, fmt.Sprintf("request body exceeds the limit of %d bytes", tooBig.Limit)
		case errors.As(err, &syntax):
			msg = "malformed XML-RPC call: " + syntax.Error()
		default:
			msg = "cannot read the request"
		}
		h.log.Info("refused call", "log_id", logID, "remote", r.RemoteAddr, "fault", code, "err", err)
		h.writeFault(w, code, msg+" (log id "+logID+")")
		h.auditFault(r, "(unreadable)", logID, started, code, msg+" (log id "+logID+")")
		return
	}
	spec, ok := methods[call.Method]
	if !ok {
		h.log.Info("unknown method", "log_id", logID, "remote", r.RemoteAddr, "method", call.Method)
		h.writeFault(w, FaultUnknownMethod, fmt.Sprintf("unknown method %q: the AM API v3 has GetVersion, ListResources, "+
			"Describe, Allocate, Renew, Provision, Status, PerformOperationalAction, Delete and Shutdown (log id %s)", call.Method, logID))
		h.auditFault(r, clipMethod(call.Method), logID, started, FaultUnknownMethod, "unknown method")
		return
	}

	rec := &am.AuditRecord{At: started, LogID: logID, Method: call.Method, RemoteAddr: r.RemoteAddr}
	resp := h.serve(am.WithAudit(r.Context(), rec), r, call, spec, logID, started)
	h.audit(rec, resp, started)
	out := responses.Get().(*bytes.Buffer)
	defer func() {
		if out.Cap() <= maxPooledBuffer {
			out.Reset()
			responses.Put(out)
		}
	}()
	if err := xmlrpc.EncodeResponse(out, resp); err != nil {
		h.log.Error("cannot encode response", "log_id", logID, "method", call.Method, "err", err)
		h.writeFault(w, FaultInternal, "internal error; log id "+logID)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(out.Len()))
	_, _ = w.Write(out.Bytes())
}

// decode reads the body (at most MaxBodyBytes, into a buffer sized by its
// Content-Length and reused by later calls) and decodes the call.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request) (*xmlrpc.Call, error) {
	lim := h.opts.Limits
	if lim.MaxDocLen <= 0 {
		lim.MaxDocLen = int(h.opts.MaxBodyBytes)
	}
	bp := bodies.Get().(*[]byte)
	defer bodies.Put(bp)
	body, err := xmlrpc.ReadDocument(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes), (*bp)[:0],
		int(min(r.ContentLength, h.opts.MaxBodyBytes)), lim)
	if err != nil {
		return nil, err
	}
	if cap(body) <= maxPooledBuffer {
		*bp = body
	}
	return xmlrpc.DecodeCallBytes(body, lim)
}

// bodies and responses hold buffers between calls: a call then allocates
// for its values, not for its bytes on the wire. A buffer that grew past
// maxPooledBuffer for a rare huge call is left to the garbage collector.
var (
	bodies    = sync.Pool{New: func() any { return new([]byte) }}
	responses = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

const maxPooledBuffer = 1 << 20

// serve runs one call and builds its return struct; a panic below becomes
// SERVERERROR.
func (h *Handler) serve(ctx context.Context, r *http.Request, call *xmlrpc.Call, spec methodSpec, logID string, started time.Time) (resp map[string]any) {
	c := am.Call{LogID: logID}
	defer func() { // runs last: the audit record takes the caller and options as parsed
		if rec := am.AuditFrom(ctx); rec != nil {
			if c.Caller != nil {
				rec.Caller = c.Caller.URN
			}
			rec.Options = am.AuditOptions(c.Options.Raw)
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("panic in call", "log_id", logID, "method", call.Method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp = h.reply(call.Method, &c, nil, fmt.Errorf("panic: %v", p), logID, started)
		}
	}()
	caller, err := credentials.CallerFromTLS(r.TLS)
	if err != nil {
		return h.reply(call.Method, &c, nil, err, logID, started)
	}
	c.Caller = caller
	value, err := h.dispatch(ctx, &c, call, spec)
	return h.reply(call.Method, &c, value, err, logID, started)
}

// reply builds the v3 return struct and logs the call.
func (h *Handler) reply(method string, c *am.Call, value any, err error, logID string, started time.Time) map[string]any {
	code := am.CodeOf(err)
	if err != nil && code == am.Success { // an *am.Err claiming success is a bug
		code = am.ServerError
	}
	callerURN := ""
	if c.Caller != nil {
		callerURN = c.Caller.URN
	}
	attrs := []any{"log_id", logID, "method", method, "caller", callerURN, "code", code.String(),
		"ms", time.Since(started).Milliseconds()}
	output := ""
	var amErr *am.Err
	switch {
	case err == nil:
		h.log.Info("call", attrs...)
	case errors.As(err, &amErr):
		output = amErr.Msg
		if output == "" {
			output = code.String()
		}
		output += " (log id " + logID + ")"
		if amErr.Err != nil {
			h.log.Warn("call failed", append(attrs, "err", err)...)
		} else {
			h.log.Info("call refused", append(attrs, "msg", amErr.Msg)...)
		}
	default:
		// Internal errors never reach the caller: only the log id does.
		output = "internal error; log id " + logID
		h.log.Error("internal error", append(attrs, "err", err)...)
	}
	if err != nil {
		value = ""
	}
	resp := map[string]any{
		"code":   map[string]any{"geni_code": int(code), "am_type": am.AMType, "am_code": int(code)},
		"value":  value,
		"output": output,
	}
	if method == "GetVersion" {
		resp["geni_api"] = am.APIVersion
	}
	return resp
}

func (h *Handler) writeFault(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	_ = xmlrpc.EncodeFault(w, code, msg)
}
