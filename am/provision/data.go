package provision

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/credentials"
)

// DataHandler serves /data/<sliver name>.tar on the aggregate's HTTPS
// listener: the sliver's /data as a tar, streamed from its agent while the
// sliver lives, from the archive directory after Delete or expiry (until
// retention ends). The caller's client certificate must be verified by the
// listener (same TLS configuration as the AM API), and the request body must
// be a slice credential (the signed XML, as omni saves it) granting the
// caller getsliceresources on the sliver's slice: POST /data/<name>.tar.
// The gate decides (credentials, operator allow/deny, shut-down slice; a
// download is not new work, so it stays open in maintenance) and every
// request, served or refused, leaves an audit row (method GetData).
// Errors are JSON {"error": ..., "code": ...}. POST /data/<name>.log gives
// the start command's whole output the same way (logs.go). The gate is
// UseGate's; without one every download is refused.
func (p *Provisioner) DataHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gate := p.gate
		body := r.Body
		caller, callerErr := credentials.CallerFromTLS(r.TLS)
		ctx, finish := gate.Audit(r.Context(), dataMethod, "", r.RemoteAddr, caller)
		err := callerErr
		if err == nil {
			err = p.serveData(w, r.WithContext(ctx), gate, caller)
		}
		finish(err)
		switch {
		case errors.Is(err, errStreamBroken):
			panic(http.ErrAbortHandler) // abort the response so the client cannot mistake it for complete
		case err != nil:
			logID := am.AuditFrom(ctx).LogID
			p.log.Info("provisioner: /data request refused", "log_id", logID, "code", am.CodeOf(err).String(), "err", err)
			if am.CodeOf(err) == am.TooBig {
				// Answer, then read what is still coming, so the client
				// sees the 413 instead of a reset connection.
				w.Header().Set("Connection", "close")
				writeErr(w, err, logID)
				agent.DrainRefusedBody(w, body)
				return
			}
			writeErr(w, err, logID)
		}
	})
}

// dataMethod names a /data download in the audit trail and in messages.
const dataMethod = "GetData"

// errStreamBroken: the live stream was cut after bytes went out.
var errStreamBroken = &am.Err{Code: am.ServerError, Msg: "the /data stream from the node broke off"}

// maxCredentialBytes bounds the request body (a credential with a long
// delegation chain is a few tens of KiB).
const maxCredentialBytes = 1 << 20

func (p *Provisioner) serveData(w http.ResponseWriter, r *http.Request, gate *am.Gate, caller *am.Caller) error {
	rest, ok := strings.CutPrefix(r.URL.Path, "/data/")
	name, logs := logsName(rest)
	if !logs {
		if !ok || !strings.HasSuffix(rest, ".tar") {
			return &am.Err{Code: am.SearchFailed, Msg: "not found: use /data/<sliver name>.tar (or /data/<sliver name>.log for the output)"}
		}
		name = strings.TrimSuffix(rest, ".tar")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &am.Err{Code: am.BadArgs, Msg: "POST your slice credential (the XML file) as the request body, e.g. curl --cert ... --data-binary @slice-cred.xml"}
	}
	if err := agentIDOK(name); err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCredentialBytes+1))
	if err != nil {
		return am.Wrap(am.BadArgs, err, "cannot read the request body")
	}
	if len(body) > maxCredentialBytes {
		return am.Errorf(am.TooBig, "the credential is larger than the limit of %d bytes", maxCredentialBytes)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return am.Errorf(am.MissingArgs, "POST your slice credential (the XML file) as the request body")
	}
	cred := credentialOf(body)
	ctx := r.Context()
	urn := am.URN{Authority: p.cfg.Authority, Type: "sliver", Name: name}.String()
	s, err := p.st.SliverByURN(ctx, urn)
	if err != nil {
		return err
	}
	var slice string
	if s != nil {
		slice = s.SliceURN
	}
	arch, err := p.st.ArchiveOf(ctx, urn)
	if err != nil {
		return err
	}
	if s == nil && arch == nil {
		return &am.Err{Code: am.SearchFailed, Msg: "no sliver or archive " + name + " here (unknown, or its archive's retention has ended)"}
	}
	if slice == "" {
		slice = arch.SliceURN
	}
	am.AuditFrom(ctx).NoteSlivers(urn)
	grant, err := gate.Check(ctx, am.Access{Method: dataMethod, Caller: caller, Credentials: []am.Credential{cred},
		Slice: slice, Privileges: []string{"getsliceresources"}})
	if err != nil {
		// The caller named a sliver: the slice may be another user's.
		return am.HideURN(err, slice, "the slice of sliver "+name)
	}
	if logs {
		if err := p.serveLogs(ctx, w, r, s, urn, name); err != nil {
			return err
		}
		p.log.Info("provisioner: output downloaded", "sliver", urn, "by", grant.User)
		return nil
	}
	filename := name + ".tar"
	if s != nil && s.Allocation == am.Provisioned {
		if err := p.streamLive(ctx, w, s, filename); err == nil || arch == nil || errors.Is(err, errStreamBroken) {
			return err
		}
		// The agent cannot give it now (unreachable, or nothing ran): the
		// last archive is better than nothing; a header says which it is.
	}
	if arch == nil {
		return &am.Err{Code: am.SearchFailed, Msg: "sliver " + name + " has no /data yet (it is not provisioned)"}
	}
	f, err := os.Open(arch.Path)
	if err != nil {
		return am.Wrap(am.SearchFailed, err, "the archive of %s is gone", name)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	w.Header().Set("X-Geniam-Data-Source", "archive "+arch.CreatedAt.UTC().Format(time.RFC3339))
	if strings.HasSuffix(arch.Path, ".gz") {
		serveGzipped(w, r, f)
		p.log.Info("provisioner: archive downloaded", "sliver", urn, "by", grant.User)
		return nil
	}
	http.ServeContent(w, r, filename, arch.CreatedAt, f)
	p.log.Info("provisioner: archive downloaded", "sliver", urn, "by", grant.User)
	return nil
}

// streamLive copies /data from the agent. Once bytes have gone out an error
// can only cut the stream (the client sees a broken tar, never a short one
// that looks whole).
func (p *Provisioner) streamLive(ctx context.Context, w http.ResponseWriter, s *am.Sliver, filename string) error {
	url, err := p.st.AgentURL(ctx, s.NodeName)
	if err != nil {
		return err
	}
	rc, err := p.client(url).Data(ctx, AgentID(s.URN))
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	w.Header().Set("X-Geniam-Data-Source", "live "+s.NodeName)
	if _, err := io.Copy(w, rc); err != nil {
		p.log.Warn("provisioner: /data stream broken", "sliver", s.URN, "err", err)
		return errStreamBroken
	}
	return nil
}

// serveGzipped sends a gzipped archive as the tar it holds: as it is, with
// Content-Encoding: gzip, to a client that accepts gzip (curl --compressed,
// browsers, Go), else uncompressed on the fly. A broken file aborts the
// response rather than end it short.
func serveGzipped(w http.ResponseWriter, r *http.Request, f *os.File) {
	w.Header().Set("Vary", "Accept-Encoding")
	if agent.AcceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		if fi, err := f.Stat(); err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		}
		if _, err := io.Copy(w, f); err != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	zr, err := gzip.NewReader(f)
	if err == nil {
		_, err = io.Copy(w, zr)
	}
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

func agentIDOK(name string) error {
	if AgentID("x+"+name) != name {
		return am.Errorf(am.BadArgs, "%q is not a sliver name", clip(name, 80))
	}
	return nil
}

// credentialOf accepts the credential XML itself, or a JSON v3 credential
// struct {"geni_type":..., "geni_version":..., "geni_value":...}.
func credentialOf(body []byte) am.Credential {
	var js struct {
		Type    string `json:"geni_type"`
		Version string `json:"geni_version"`
		Value   string `json:"geni_value"`
	}
	if json.Unmarshal(body, &js) == nil && js.Value != "" {
		return am.Credential{Type: js.Type, Version: js.Version, Value: js.Value}
	}
	return am.Credential{Type: "geni_sfa", Version: "3", Value: string(body)}
}

// writeErr answers with the error's status and caller-safe message, quoting
// the log id of the request's audit row and log lines.
func writeErr(w http.ResponseWriter, err error, logID string) {
	code := am.CodeOf(err)
	status := http.StatusInternalServerError
	switch code {
	case am.BadArgs, am.MissingArgs:
		status = http.StatusBadRequest
	case am.Forbidden, am.Expired:
		status = http.StatusForbidden
	case am.SearchFailed:
		status = http.StatusNotFound
	case am.TooBig:
		status = http.StatusRequestEntityTooLarge
	case am.Unavailable, am.TimedOut, am.Busy:
		status = http.StatusServiceUnavailable
	}
	msg := am.MessageOf(err)
	if msg == "" || (code == am.ServerError && !errors.As(err, new(*am.Err))) {
		msg = "internal error"
	}
	msg += " (log id " + logID + ")"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": msg, "code": code.String(), "geni_code": int(code), "log_id": logID})
}
