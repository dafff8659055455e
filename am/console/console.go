// Package console is the aggregate's web console for operators and
// experimenters: nodes with capacity, usage and health; slivers with owner,
// slice, image, node, state and exit code; the job queue; the audit trail
// with search; usage charts. Pages are rendered on the server
// (html/template, charts as inline SVG) and a few lines of plain JavaScript
// refresh the live parts when the server says something changed
// (server-sent events on /events). It only reads: the one thing a viewer
// can do is download a sliver's /data, which goes through the AM listener's
// own handler and its credential check.
//
// Who sees what is decided by the aggregate's gate (am.Gate), asked in
// access.go alone.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
)

// Source is what the console reads (implemented by *store.Store).
type Source interface {
	Nodes(ctx context.Context) ([]store.NodeRow, error)
	AgentHealth(ctx context.Context) (map[string]store.AgentHealthRow, error)
	AdminSlivers(ctx context.Context, f store.SliverFilter) ([]am.Sliver, error)
	SliverHistory(ctx context.Context, urn string) ([]store.HistoryRow, error)
	Jobs(ctx context.Context, f store.JobFilter) ([]string, [][]string, error)
	Audit(ctx context.Context, f store.AuditFilter) ([]store.AuditRow, error)
	SlicesOfUser(ctx context.Context, user string) ([]string, error)
	Usage(ctx context.Context, since time.Time, step time.Duration) ([]store.UsagePoint, error)
	ChangeMark(ctx context.Context) (string, error)
}

// Config wires the console.
type Config struct {
	Source Source
	// Gate decides who may see what and keeps the audit trail (the
	// aggregate's gate; its operators open the operator view). Required.
	Gate  *am.Gate
	Token string        // operator token for the login page; "" disables it
	Poll  time.Duration // how often /events looks for changes (default 1s)
	// Data is the AM listener's POST /data/<name>.tar handler (nil: this
	// aggregate runs no provisioner, so there is no /data to download).
	Data http.Handler
	Log  *slog.Logger
}

// Console is an http.Handler; Run must run for /events to report changes.
type Console struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
	hub   *hub

	chartMu sync.Mutex
	charts  map[string]usedChart // by range

	views audited // sliver views audited lately (access.go)
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New parses the templates and builds the routes.
func New(cfg Config) (*Console, error) {
	if cfg.Source == nil {
		return nil, errors.New("console: no source")
	}
	if cfg.Gate == nil {
		return nil, errors.New("console: no gate")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}, hub: newHub(cfg.Source, cfg.Poll, cfg.Log),
		charts: map[string]usedChart{}}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if n == "templates/layout.html" || n == "templates/partials.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		c.pages[strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.logout)
	mux.HandleFunc("GET /{$}", c.page("overview", c.overview, false))
	mux.HandleFunc("GET /nodes", c.page("nodes", c.nodes, true))
	mux.HandleFunc("GET /slivers", c.page("slivers", c.slivers, false))
	mux.HandleFunc("GET /sliver", c.page("sliver", c.sliver, false))
	mux.HandleFunc("GET /jobs", c.page("jobs", c.jobs, true))
	mux.HandleFunc("GET /audit", c.page("audit", c.audit, false))
	mux.HandleFunc("GET /usage.svg", c.usageSVG)
	mux.HandleFunc("GET /events", c.events)
	mux.HandleFunc("POST /data", c.download)
	c.mux = mux
	return c, nil
}

// Run polls for changes while pages are open, until ctx ends.
func (c *Console) Run(ctx context.Context) { c.hub.run(ctx) }

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything the page needs is served from here: no inline script, no
	// framing, no other origin.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	c.mux.ServeHTTP(w, r)
}

// view is what every page template gets.
type view struct {
	Title  string
	Page   string
	Viewer *viewer
	Now    time.Time
	Query  url.Values
	Data   any
	Error  string
	// TokenLogin: the login page offers the operator token's form.
	TokenLogin bool
}

// page wraps a page's data function with the viewer check and rendering.
func (c *Console) page(name string, data func(r *http.Request, v *viewer) (string, any, error), operatorOnly bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := c.who(r)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if v == nil {
			c.render(w, http.StatusUnauthorized, "login", view{Title: "Sign in", Page: "login", TokenLogin: c.cfg.Token != ""})
			return
		}
		if operatorOnly && !v.Operator {
			c.renderError(w, r, v, forbidden)
			return
		}
		title, d, err := data(r, v)
		if err != nil {
			c.renderError(w, r, v, err)
			return
		}
		c.render(w, http.StatusOK, name, view{Title: title, Page: name, Viewer: v, Now: time.Now().UTC(), Query: r.URL.Query(), Data: d})
	}
}

// who is viewerOf with an experimenter's slices read.
func (c *Console) who(r *http.Request) (*viewer, error) {
	v, err := c.viewerOf(r)
	if err != nil || v == nil || v.Operator {
		return v, err
	}
	s, err := c.cfg.Source.SlicesOfUser(r.Context(), v.User)
	if err != nil {
		return nil, err
	}
	v.Slices = s
	return v, nil
}

func (c *Console) render(w http.ResponseWriter, status int, name string, v view) {
	t := c.pages[name]
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		c.cfg.Log.Error("console: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, b.String())
}

// renderError shows an *am.Err's message; anything else is logged and shown
// as an internal error with its log id.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	status, msg := c.errorText(r, err)
	c.render(w, status, "error", view{Title: "Error", Page: "error", Viewer: v, Now: time.Now().UTC(), Error: msg})
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := c.errorText(r, err)
	http.Error(w, msg, status)
}

func (c *Console) errorText(r *http.Request, err error) (int, string) {
	var e *am.Err
	if errors.As(err, &e) && e.Code != am.ServerError {
		switch e.Code {
		case am.Forbidden:
			return http.StatusForbidden, e.Msg
		case am.SearchFailed:
			return http.StatusNotFound, e.Msg
		case am.BadArgs:
			return http.StatusBadRequest, e.Msg
		case am.Busy: // e.g. "the database is unreachable; retry"
			return http.StatusServiceUnavailable, e.Msg
		}
		return http.StatusBadRequest, e.Msg
	}
	id := am.NewLogID()
	c.cfg.Log.Error("console", "log_id", id, "path", r.URL.Path, "err", err)
	return http.StatusInternalServerError, "internal error; log id " + id
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	v, _ := c.viewerOf(r) // a refused certificate may still sign in with the token
	c.render(w, http.StatusOK, "login", view{Title: "Sign in", Page: "login", Viewer: v, TokenLogin: c.cfg.Token != ""})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if !c.tokenOK(r.PostFormValue("token")) {
		time.Sleep(500 * time.Millisecond) // a guesser gets two tries a second per connection
		c.render(w, http.StatusForbidden, "login", view{Title: "Sign in", Page: "login", Error: "wrong token", TokenLogin: c.cfg.Token != ""})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: c.sessionValue(), Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode})
	c.cfg.Log.Info("console: operator signed in with the token", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
