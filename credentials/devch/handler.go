package devch

import (
	"bytes"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials/devpki"
)

// Aggregate is an entry of ListAggregates.
type Aggregate struct {
	URN, URL string
}

// Handler serves the clearinghouse API of gcf's gch.py over XML-RPC, which
// omni's "gcf" framework speaks: GetVersion, CreateUserCredential,
// CreateSlice (which also hands an owner the credential of an existing
// slice), RenewSlice, DeleteSlice, ListMySlices and ListAggregates. It must
// sit behind a TLS server that asks for client certificates
// (tls.RequireAnyClientCert): the caller is the certificate's subject.
type Handler struct {
	CH         *Clearinghouse
	Aggregates []Aggregate
	Log        *log.Logger // internal errors; nil means the standard logger
}

const maxRequest = 1 << 20

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "XML-RPC wants POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
	if err != nil {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	var user []*x509.Certificate
	if r.TLS != nil {
		user = r.TLS.PeerCertificates
	}
	result, err := h.call(body, user)
	w.Header().Set("Content-Type", "text/xml")
	if err != nil {
		code, msg := am.CodeOf(err), am.MessageOf(err)
		if msg == "" {
			h.logf("devch: %v", err)
			msg = "internal error"
		}
		_ = xmlrpc.EncodeFault(w, int(code), msg)
		return
	}
	if err := xmlrpc.EncodeResponse(w, result); err != nil {
		h.logf("devch: cannot encode the reply: %v", err)
	}
}

func (h *Handler) logf(format string, args ...any) {
	if h.Log != nil {
		h.Log.Printf(format, args...)
	} else {
		log.Printf(format, args...)
	}
}

// text returns a parameter that must be a string (or a dateTime, as its
// RFC 3339 text).
func text(p any) (string, error) {
	switch v := p.(type) {
	case string:
		return v, nil
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), nil
	}
	return "", am.Errorf(am.BadArgs, "parameters must be strings")
}

func (h *Handler) call(body []byte, user []*x509.Certificate) (any, error) {
	mc, err := xmlrpc.DecodeCall(bytes.NewReader(body), xmlrpc.Limits{})
	if err != nil {
		return nil, am.Errorf(am.BadArgs, "malformed XML-RPC request: %v", err)
	}
	args := make([]string, len(mc.Params))
	for i, p := range mc.Params {
		if args[i], err = text(p); err != nil {
			return nil, err
		}
	}
	arg := func(i int) string {
		if i < len(args) {
			return strings.TrimSpace(args[i])
		}
		return ""
	}
	ch := h.CH
	switch mc.Method {
	case "GetVersion":
		return map[string]any{"gcf-ch_api": "2", "authority": ch.Authority}, nil
	case "CreateUserCredential":
		if c := arg(0); c != "" && len(user) > 0 {
			// gcf takes the certificate as an argument; we trust only the
			// one the TLS handshake proved, and it must be the same.
			certs, err := devpki.ParseCerts([]byte(c))
			if err != nil || !certs[0].Equal(user[0]) {
				return nil, am.Errorf(am.Forbidden, "the certificate argument is not the client certificate")
			}
		}
		cred, err := ch.UserCredential(user)
		return string(cred), err
	case "CreateSlice":
		name, err := ch.SliceName(arg(0))
		if err != nil {
			return nil, err
		}
		_, cred, err := ch.CreateSlice(user, name, time.Time{})
		return string(cred), err
	case "RenewSlice":
		expires, err := parseExpiration(arg(1))
		if err != nil {
			return nil, err
		}
		if _, err := ch.RenewSlice(user, arg(0), expires); err != nil {
			return nil, err
		}
		return true, nil
	case "DeleteSlice":
		if err := ch.DeleteSlice(user, arg(0)); err != nil {
			return nil, err
		}
		return true, nil
	case "ListMySlices":
		owner, err := ch.member(user)
		if err != nil {
			return nil, err
		}
		if u := arg(0); u != "" && u != owner {
			return nil, am.Errorf(am.Forbidden, "you may list only your own slices")
		}
		return ch.SlicesOf(owner), nil
	case "ListAggregates":
		out := make([][]string, len(h.Aggregates))
		for i, a := range h.Aggregates {
			out[i] = []string{a.URN, a.URL}
		}
		return out, nil
	}
	return nil, am.Errorf(am.Unsupported, "unknown method %q", mc.Method)
}

// parseExpiration reads omni's isoformat() time (no zone means UTC).
func parseExpiration(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, am.Errorf(am.BadArgs, "expiration %q is not an ISO 8601 time", s)
}
