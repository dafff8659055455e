package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// HandlerOptions tune the HTTP edge.
type HandlerOptions struct {
	// AllowedClients, if not empty, lists the client identities (certificate
	// URN, or CN when it has none) allowed in; everyone else whose
	// certificate chains to the CA gets 403.
	AllowedClients []string
	// V1Only serves only the AERPAW v1 paths (the optional plain-HTTP
	// listener); v2 answers 404 there.
	V1Only bool
	// MaxFetchWait caps ?wait= on v2 fetch and how long v1 fetchContainer
	// waits; default 30 min.
	MaxFetchWait time.Duration
	Logger       *slog.Logger
}

// Handler is the agent's HTTP API: v2 JSON under /v2/ and the AERPAW v1 GET
// paths. It only translates between HTTP and Service; it never talks to the
// engine itself.
type Handler struct {
	svc *Service
	opt HandlerOptions
	log *slog.Logger
	mux *http.ServeMux
}

// NewHandler returns the HTTP edge of svc.
func NewHandler(svc *Service, opt HandlerOptions) *Handler {
	if opt.Logger == nil {
		opt.Logger = svc.log
	}
	if opt.MaxFetchWait == 0 {
		opt.MaxFetchWait = 30 * time.Minute
	}
	h := &Handler{svc: svc, opt: opt, log: opt.Logger, mux: http.NewServeMux()}
	m := h.mux
	if !opt.V1Only {
		m.HandleFunc("GET /v2/ping", h.ping)
		m.HandleFunc("GET /v2/slivers", h.list)
		m.HandleFunc("GET /v2/changes", h.changes)
		m.HandleFunc("GET /v2/slivers/{id}", h.statusVerb(svc.Status))
		m.HandleFunc("DELETE /v2/slivers/{id}", h.deleteVerb(svc.Delete))
		m.HandleFunc("PUT /v2/slivers/{id}/image", h.fetch)
		m.HandleFunc("DELETE /v2/slivers/{id}/image", h.deleteVerb(svc.RemoveImage))
		m.HandleFunc("PUT /v2/slivers/{id}/container", h.run)
		m.HandleFunc("DELETE /v2/slivers/{id}/container", h.deleteVerb(svc.Kill))
		m.HandleFunc("POST /v2/slivers/{id}/stop", h.statusVerb(svc.Stop))
		m.HandleFunc("POST /v2/slivers/{id}/start", h.statusVerb(svc.Start))
		m.HandleFunc("GET /v2/slivers/{id}/data", h.emitData)
		m.HandleFunc("DELETE /v2/slivers/{id}/data", h.deleteVerb(svc.DeleteData))
		m.HandleFunc("GET /v2/slivers/{id}/logs/{stream}", h.logs)
		m.HandleFunc("PUT /v2/slivers/{id}/users", h.updateUsers)
	}
	m.HandleFunc("GET /v1/fetchContainer/{id}", h.v1Fetch)
	m.HandleFunc("GET /v1/startContainer/{id}", h.v1Start)
	m.HandleFunc("GET /v1/emitDataVolume/{id}", h.v1EmitData)
	m.HandleFunc("GET /v1/deleteDataVolume/{id}", h.v1DeleteData)
	m.HandleFunc("GET /v1/killContainer/{id}", h.v1Kill)
	m.HandleFunc("GET /v1/deleteContainer/{id}", h.v1DeleteContainer)
	m.HandleFunc("GET /v1/ping/", h.v1Ping)
	m.HandleFunc("GET /v1/ping", h.v1Ping)
	m.HandleFunc("GET /v1/fetchVM/{id}", h.v1Unsupported)
	m.HandleFunc("GET /v1/startVM/{id}", h.v1Unsupported)
	return h
}

// ctxKey carries the caller identity in the request context.
type ctxKey struct{}

// Caller is who made a request, from the client certificate.
type Caller struct {
	ID     string // certificate URN, else CN; "anonymous" on the plain listener
	Remote string
}

// CallerOf returns the caller of a request handled by Handler.
func CallerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(ctxKey{}).(Caller)
	return c
}

// ServeHTTP checks the path, identifies and authorises the caller, logs the
// request, and dispatches.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	caller := Caller{ID: "anonymous", Remote: r.RemoteAddr}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		caller.ID = IdentityOf(r.TLS.PeerCertificates[0])
	}
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, caller))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		lvl := slog.LevelInfo
		if rec.status >= 500 {
			lvl = slog.LevelError
		}
		h.log.Log(r.Context(), lvl, "agent: request", "caller", caller.ID, "remote", caller.Remote,
			"method", r.Method, "path", am.Clip(r.URL.EscapedPath(), 300), "status", rec.status,
			"bytes", rec.bytes, "took", time.Since(t0).Round(time.Microsecond))
	}()
	if err := checkPath(r.URL); err != nil {
		writeErr(rec, r, h.log, err)
		return
	}
	if len(h.opt.AllowedClients) > 0 && !slices.Contains(h.opt.AllowedClients, caller.ID) {
		writeErr(rec, r, h.log, am.Errorf(am.Forbidden, "client %s is not allowed on this agent", caller.ID))
		return
	}
	if refuseLargeBody(rec, r, MaxRequestBody, func(err error) { writeErr(rec, r, h.log, err) }) {
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		// No route: let the mux decide between 404 and 405 (it sets Allow),
		// then answer in JSON like every other error.
		probe := &statusProbe{header: http.Header{}}
		h.mux.ServeHTTP(probe, r)
		if allow := probe.header.Get("Allow"); allow != "" {
			rec.Header().Set("Allow", allow)
		}
		body := agent.ErrorBody{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, am.Clip(r.URL.Path, 200)), Code: am.SearchFailed.String(), GeniCode: int(am.SearchFailed)}
		status := http.StatusNotFound
		if probe.code == http.StatusMethodNotAllowed {
			status = probe.code
			body.Error = fmt.Sprintf("method %s not allowed on %s", r.Method, am.Clip(r.URL.Path, 200))
			body.Code, body.GeniCode = am.BadArgs.String(), int(am.BadArgs)
		}
		writeJSON(rec, status, body)
		return
	}
	body := r.Body
	h.mux.ServeHTTP(rec, r)
	if rec.status == http.StatusRequestEntityTooLarge {
		agent.DrainRefusedBody(rec, body) // a chunked body went over the limit
	}
}

// statusProbe records what the mux would answer for an unrouted request.
type statusProbe struct {
	header http.Header
	code   int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(code int)        { p.code = code }

// checkPath refuses, before routing, any path whose sliver segment is not a
// valid id. The mux would otherwise clean "../" away (and redirect), and an
// encoded "/" could change which route matches.
func checkPath(u *url.URL) error {
	segs := strings.Split(u.EscapedPath(), "/")
	for i, s := range segs {
		if s == ".." || s == "." || (s == "" && i > 0 && i < len(segs)-1) {
			return am.Errorf(am.BadArgs, "invalid path: empty, \".\" and \"..\" segments are not allowed")
		}
	}
	// "", "v2", "slivers", ID, ...  or  "", "v1", "op", NAME
	var raw string
	switch {
	case len(segs) >= 4 && segs[1] == "v2" && segs[2] == "slivers":
		raw = segs[3]
	case len(segs) >= 4 && segs[1] == "v1" && segs[2] != "ping":
		raw = segs[3]
		if len(segs) > 4 {
			return am.Errorf(am.BadArgs, "invalid container name: the path has extra segments")
		}
	default:
		return nil
	}
	id, err := url.PathUnescape(raw)
	if err != nil {
		return am.Errorf(am.BadArgs, "invalid sliver id: bad escape in %q", am.Clip(raw, 80))
	}
	return agent.ValidID(id)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.wrote = true
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// httpStatus maps a geni_code to the HTTP status the agent answers with.
func httpStatus(c am.Code) int {
	switch c {
	case am.BadArgs, am.MissingArgs, am.BadVersion:
		return http.StatusBadRequest
	case am.Forbidden:
		return http.StatusForbidden
	case am.SearchFailed:
		return http.StatusNotFound
	case am.AlreadyExists, am.Busy, am.InProgress, am.Expired:
		return http.StatusConflict
	case am.TooBig:
		return http.StatusRequestEntityTooLarge
	case am.Error, am.Refused:
		return http.StatusUnprocessableEntity
	case am.Unsupported:
		return http.StatusNotImplemented
	case am.Unavailable:
		return http.StatusServiceUnavailable
	case am.TimedOut:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}

// writeErr answers with the error as JSON. Internal errors (not an *am.Err,
// or SERVERERROR) are logged with an id and the caller sees only the id.
func writeErr(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := am.CodeOf(err)
	msg := am.MessageOf(err)
	body := agent.ErrorBody{Code: code.String(), GeniCode: int(code)}
	if code == am.ServerError || msg == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		body.LogID = hex.EncodeToString(b)
		if msg == "" {
			msg = "internal error"
		}
		log.Error("agent: internal error", "log_id", body.LogID, "method", r.Method, "path", am.Clip(r.URL.EscapedPath(), 300), "err", err)
	}
	body.Error = msg
	writeJSON(w, httpStatus(code), body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads the request's JSON body into v; when it cannot, it answers
// the error and returns false.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := decodeBody(w, r, v)
	if err != nil {
		writeErr(w, r, h.log, err)
	}
	return err == nil
}

// decodeBody reads a JSON body of at most MaxRequestBody, refusing unknown
// fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			w.Header().Set("Connection", "close")
			return am.Errorf(am.TooBig, "request body is larger than the limit of %d bytes", mbe.Limit)
		}
		return am.Errorf(am.BadArgs, "request body is not valid JSON for this call: %s", am.Clip(err.Error(), 200))
	}
	if dec.More() {
		return am.Errorf(am.BadArgs, "request body has data after the JSON value")
	}
	return nil
}

func (h *Handler) ping(w http.ResponseWriter, r *http.Request) {
	out := agent.PingResult{OK: true, Instance: h.svc.cfg.Instance, Caller: CallerOf(r.Context()).ID, Links: h.svc.LinkSupport()}
	if d, err := diskOf(h.svc.cfg.StateDir); err == nil {
		out.Disk = d
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	sts, err := h.svc.List(r.Context())
	if err != nil {
		writeErr(w, r, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, agent.OfAggregate(sts, r.URL.Query().Get("aggregate")))
}

// deleteVerb serves a DELETE of a sliver or a part of it: 204 once it is
// gone (already gone included), or the error.
func (h *Handler) deleteVerb(verb func(ctx context.Context, id string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := verb(r.Context(), r.PathValue("id")); err != nil {
			writeErr(w, r, h.log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// statusVerb serves a verb that answers with the sliver's status.
func (h *Handler) statusVerb(verb func(ctx context.Context, id string) (agent.Status, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st, err := verb(r.Context(), r.PathValue("id"))
		h.statusOr(w, r, http.StatusOK, st, err)
	}
}

// fetch: PUT /v2/slivers/{id}/image {"url","sha256"}[?wait=DURATION].
// 202 Accepted with the status while the fetch runs; 200 with the status if
// it is already done (or finished within ?wait=); a failed fetch within the
// wait is answered with the error (422).
func (h *Handler) fetch(w http.ResponseWriter, r *http.Request) {
	var req agent.FetchRequest
	if !h.decode(w, r, &req) {
		return
	}
	wait, err := h.waitParam(r)
	if err != nil {
		writeErr(w, r, h.log, err)
		return
	}
	id := r.PathValue("id")
	st, _, err := h.svc.Fetch(r.Context(), id, req, FetchOptions{})
	if err == nil && wait > 0 && st.State == agent.StateFetching {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		st, err = h.svc.WaitFetch(ctx, id)
		cancel()
	}
	h.answerFetch(w, r, st, err)
}

func (h *Handler) answerFetch(w http.ResponseWriter, r *http.Request, st agent.Status, err error) {
	switch {
	case err != nil:
		writeErr(w, r, h.log, err)
	case st.Image.State == agent.ImageFetching:
		w.Header().Set("Location", "/v2/slivers/"+st.ID)
		writeJSON(w, http.StatusAccepted, st)
	case st.Image.State == agent.ImageFailed:
		writeErr(w, r, h.log, am.Errorf(am.Error, "fetch of %s failed: %s", st.ID, st.Image.Error))
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

func (h *Handler) waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if n, aerr := strconv.Atoi(v); aerr == nil {
		d, err = time.Duration(n)*time.Second, nil // plain seconds
	}
	if err != nil || d < 0 {
		return 0, am.Errorf(am.BadArgs, "wait must be a duration such as 30s, not %q", am.Clip(v, 40))
	}
	return min(d, h.opt.MaxFetchWait), nil
}

// run: PUT /v2/slivers/{id}/container with a StartRequest. 201 with the
// status once the container runs; 200 if it already existed.
func (h *Handler) run(w http.ResponseWriter, r *http.Request) {
	var req agent.StartRequest
	if !h.decode(w, r, &req) {
		return
	}
	st, created, err := h.svc.Run(r.Context(), r.PathValue("id"), req)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	h.statusOr(w, r, code, st, err)
}

// statusOr answers code with the status, or the error.
func (h *Handler) statusOr(w http.ResponseWriter, r *http.Request, code int, st agent.Status, err error) {
	if err != nil {
		writeErr(w, r, h.log, err)
		return
	}
	writeJSON(w, code, st)
}

func (h *Handler) emitData(w http.ResponseWriter, r *http.Request) {
	h.streamTar(w, r, r.PathValue("id"), "")
}

// streamTar sends the data archive. Errors before the first byte get a JSON
// answer; an error in the middle aborts the connection so the client sees a
// broken transfer rather than a short archive that looks complete.
func (h *Handler) streamTar(w http.ResponseWriter, r *http.Request, id, prefix string) {
	if err := h.svc.Known(id); err != nil {
		writeErr(w, r, h.log, err)
		return
	}
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".tar"))
	w.Header().Set("Vary", "Accept-Encoding")
	tw := &firstWrite{w: w, contentType: "application/x-tar"}
	out, finish := compressedFor(r, w, tw)
	files, err := h.svc.EmitData(r.Context(), id, out, prefix)
	if err == nil {
		err = finish()
	}
	if err != nil {
		if !tw.started {
			w.Header().Del("Content-Disposition")
			w.Header().Del("Content-Encoding")
			writeErr(w, r, h.log, err)
			return
		}
		h.log.Error("agent: data stream aborted", "sliver", id, "files", files, "err", err)
		panic(http.ErrAbortHandler)
	}
	tw.start()
	h.log.Info("agent: data emitted", "sliver", id, "files", files)
}

// logs: GET /v2/slivers/{id}/logs/{stdout|stderr|all} streams the whole
// stream (all: both, in the order written) as text; Service.Logs checks the
// name. Errors after the first byte abort the connection.
func (h *Handler) logs(w http.ResponseWriter, r *http.Request) {
	id, stream := r.PathValue("id"), r.PathValue("stream")
	lw := &firstWrite{w: w, contentType: "text/plain; charset=utf-8"}
	if err := h.svc.Logs(r.Context(), id, stream, lw); err != nil {
		if !lw.started {
			writeErr(w, r, h.log, err)
			return
		}
		h.log.Error("agent: log stream aborted", "sliver", id, "err", err)
		panic(http.ErrAbortHandler)
	}
	lw.start() // an empty log is still a 200
}

// firstWrite sends the success headers only when the first byte is ready,
// so an error found before that still gets a proper JSON answer.
type firstWrite struct {
	w           http.ResponseWriter
	contentType string
	started     bool
}

func (f *firstWrite) start() {
	if !f.started {
		f.started = true
		f.w.Header().Set("Content-Type", f.contentType)
		f.w.Header().Set("X-Content-Type-Options", "nosniff")
		f.w.WriteHeader(http.StatusOK)
	}
}

func (f *firstWrite) Write(p []byte) (int, error) {
	f.start()
	return f.w.Write(p)
}

func (h *Handler) updateUsers(w http.ResponseWriter, r *http.Request) {
	var req agent.UsersRequest
	if !h.decode(w, r, &req) {
		return
	}
	st, err := h.svc.UpdateUsers(r.Context(), r.PathValue("id"), req.Users)
	h.statusOr(w, r, http.StatusOK, st, err)
}

// --- AERPAW v1 compatibility -------------------------------------------------
//
// The old agent answered "200 OK" before doing anything. These paths do the
// work first and answer honestly: 200 with a JSON body that says "OK" when it
// worked, an error status with a JSON error when it did not.

// v1Fetch: GET /v1/fetchContainer/NAME[?sha256=HEX][&url=URL]. Downloads
// <containerStore>/NAME.docker.tar (or url) and waits until it is loaded.
func (h *Handler) v1Fetch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	req := agent.FetchRequest{URL: q.Get("url"), SHA256: q.Get("sha256")}
	if req.URL != "" && h.opt.V1Only {
		// The plain listener has no authentication: it may only make the
		// agent fetch from the configured store, not from any URL.
		writeErr(w, r, h.log, am.Errorf(am.Forbidden, "fetchContainer: ?url= is not accepted on the plain-HTTP listener"))
		return
	}
	if req.URL == "" {
		if h.svc.cfg.ContainerStore == "" {
			writeErr(w, r, h.log, am.Errorf(am.MissingArgs, "fetchContainer: no container store is configured; give ?url="))
			return
		}
		req.URL = strings.TrimSuffix(h.svc.cfg.ContainerStore, "/") + "/" + url.PathEscape(id) + ".docker.tar"
	}
	if req.SHA256 == "" && h.svc.cfg.V1RequireDigest {
		writeErr(w, r, h.log, am.Errorf(am.MissingArgs, "fetchContainer: this agent requires ?sha256= with the image digest"))
		return
	}
	st, _, err := h.svc.Fetch(r.Context(), id, req, FetchOptions{AllowNoDigest: true})
	if err == nil && st.State == agent.StateFetching {
		ctx, cancel := context.WithTimeout(r.Context(), h.opt.MaxFetchWait)
		st, err = h.svc.WaitFetch(ctx, id)
		cancel()
	}
	switch {
	case err != nil:
		writeErr(w, r, h.log, err)
	case st.Image.State == agent.ImageReady:
		v := st.Image.Verified
		writeJSON(w, http.StatusOK, agent.V1Answer{Status: "OK", Sliver: id, ImageID: st.Image.ID, Verified: &v})
	case st.Image.State == agent.ImageFailed:
		writeErr(w, r, h.log, am.Errorf(am.Error, "fetchContainer %s failed: %s", id, st.Image.Error))
	default:
		writeErr(w, r, h.log, am.Errorf(am.TimedOut, "fetchContainer %s: still %s", id, st.Image.State))
	}
}

// v1Start: GET /v1/startContainer/NAME. Starts the fetched image with its
// own entrypoint, /data bound, network none (the agent's default), and
// answers once the container runs. It waits for a fetch still in progress.
func (h *Handler) v1Start(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), h.opt.MaxFetchWait)
	_, _ = h.svc.WaitFetch(ctx, id)
	cancel()
	st, _, err := h.svc.Run(r.Context(), id, agent.StartRequest{})
	if err != nil {
		writeErr(w, r, h.log, err)
		return
	}
	cid := ""
	if st.Container != nil {
		cid = st.Container.ID
	}
	writeJSON(w, http.StatusOK, agent.V1Answer{Status: "OK", Sliver: id, Container: cid, State: st.State})
}

// v1EmitData: GET /v1/emitDataVolume/NAME streams a tar whose entries are
// NAME/data/..., the layout of the old agent's `tar cf - NAME`.
func (h *Handler) v1EmitData(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.streamTar(w, r, id, id+"/data/")
}

func (h *Handler) v1DeleteData(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.v1OK(w, r, id, h.svc.DeleteData(r.Context(), id))
}

func (h *Handler) v1Kill(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.v1OK(w, r, id, h.svc.Kill(r.Context(), id))
}

// v1DeleteContainer: the old agent ran a global `docker system prune`; this
// removes only the sliver's container and, if no other sliver uses it, its image.
func (h *Handler) v1DeleteContainer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := h.svc.Kill(r.Context(), id)
	if err == nil {
		err = h.svc.RemoveImage(r.Context(), id)
	}
	h.v1OK(w, r, id, err)
}

func (h *Handler) v1OK(w http.ResponseWriter, r *http.Request, id string, err error) {
	if err != nil {
		writeErr(w, r, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, agent.V1Answer{Status: "OK", Sliver: id})
}

func (h *Handler) v1Ping(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, agent.V1Answer{Status: "OK"})
}

func (h *Handler) v1Unsupported(w http.ResponseWriter, r *http.Request) {
	writeErr(w, r, h.log, am.Errorf(am.Unsupported, "virtual machines are not supported by this agent"))
}
