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
	"github.com/geniam/geniam/am/geniapi"
)

// DataHandler serves /data/<sliver name>.tar on the aggregate's HTTPS
// listener: the sliver's /data as a tar, streamed from its agent while the
// sliver lives, from the archive directory after Delete or expiry (until
// retention ends). The caller's client certificate must be verified by the
// listener (same TLS configuration as the AM API), and the request body must
// be a slice credential (the signed XML, as omni saves it) granting the
// caller getsliceresources on the sliver's slice: POST /data/<name>.tar.
// Errors are JSON {"error": ..., "code": ...}.
func (p *Provisioner) DataHandler(auth am.Authorizer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := r.Body
		if err := p.serveData(w, r, auth); err != nil {
			if am.CodeOf(err) == am.TooBig {
				// Answer, then read what is still coming, so the client
				// sees the 413 instead of a reset connection.
				w.Header().Set("Connection", "close")
				writeErr(w, err)
				agent.DrainRefusedBody(w, body)
				return
			}
			writeErr(w, err)
		}
	})
}

// maxCredentialBytes bounds the request body (a credential with a long
// delegation chain is a few tens of KiB).
const maxCredentialBytes = 1 << 20

func (p *Provisioner) serveData(w http.ResponseWriter, r *http.Request, auth am.Authorizer) error {
	name, ok := strings.CutPrefix(r.URL.Path, "/data/")
	if !ok || !strings.HasSuffix(name, ".tar") {
		return &am.Err{Code: am.SearchFailed, Msg: "not found: use /data/<sliver name>.tar"}
	}
	name = strings.TrimSuffix(name, ".tar")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return &am.Err{Code: am.BadArgs, Msg: "POST your slice credential (the XML file) as the request body, e.g. curl --cert ... --data-binary @slice-cred.xml"}
	}
	if err := agentIDOK(name); err != nil {
		return err
	}
	caller, err := geniapi.CallerFromTLS(r.TLS)
	if err != nil {
		return err
	}
	if r.ContentLength > maxCredentialBytes {
		return am.Errorf(am.TooBig, "the credential (request body of %d bytes) is larger than the limit of %d bytes", r.ContentLength, maxCredentialBytes)
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
	urn := "urn:publicid:IDN+" + p.cfg.Authority + "+sliver+" + name
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
	if auth == nil {
		return am.Errorf(am.Forbidden, "no trust configuration")
	}
	authz, err := auth.Authorize(am.AuthRequest{Method: "GetData", Caller: caller, Credentials: []am.Credential{cred},
		Target: slice, Privileges: []string{"getsliceresources"}, Now: time.Now()})
	if err != nil {
		// The caller named a sliver: the slice may be another user's.
		return am.HideURN(err, slice, "the slice of sliver "+name)
	}
	if authz == nil {
		return am.Errorf(am.Forbidden, "the credential does not grant access to sliver %s", name)
	}
	filename := name + ".tar"
	if s != nil && s.Allocation == am.Provisioned {
		if err := p.streamLive(ctx, w, s, filename); err == nil || arch == nil {
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
		p.log.Info("provisioner: archive downloaded", "sliver", urn, "by", authz.User)
		return nil
	}
	http.ServeContent(w, r, filename, arch.CreatedAt, f)
	p.log.Info("provisioner: archive downloaded", "sliver", urn, "by", authz.User)
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
		panic(http.ErrAbortHandler) // abort the response so the client cannot mistake it for complete
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

func writeErr(w http.ResponseWriter, err error) {
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": msg, "code": code.String(), "geni_code": int(code)})
}
