package am

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AuditRecord is one AM API call as the audit trail keeps it. The edge
// creates it when the call arrives and puts it in the context (WithAudit); the
// Aggregate notes what only it knows (the authorization, the slice a sliver
// URN belongs to, the slivers it created or deployed); the edge fills in the
// outcome and hands the record to an Auditor once the reply is built.
type AuditRecord struct {
	At         time.Time
	LogID      string
	Method     string
	RemoteAddr string
	Caller     string // URN of the TLS client certificate

	mu               sync.Mutex
	user             string
	speaksFor        bool
	sliceURN         string
	sliverURNs       []string
	credentialDigest string
	credentialIssuer string
	deployed         []Deployment

	Options  map[string]any // AuditOptions of the call
	Code     Code           // geni_code of the reply, or a negative XML-RPC fault code
	Output   string
	Duration time.Duration
}

// Deployment is one sliver a Provision deployed: which image went where.
type Deployment struct {
	SliverURN   string `json:"sliver_urn"`
	Node        string `json:"node"`
	ClientID    string `json:"client_id"`
	ImageURL    string `json:"image_url"`
	ImageSHA256 string `json:"image_sha256"`
}

// AuditView is a consistent copy of what the Aggregate noted.
type AuditView struct {
	User             string
	SpeaksFor        bool
	SliceURN         string
	SliverURNs       []string
	CredentialDigest string
	CredentialIssuer string
	Deployed         []Deployment
}

// Auditor receives each finished call. Audit must not block: an
// implementation queues the record and reports what it cannot keep.
type Auditor interface {
	Audit(rec *AuditRecord)
}

type auditKey struct{}

// WithAudit returns ctx carrying rec.
func WithAudit(ctx context.Context, rec *AuditRecord) context.Context {
	return context.WithValue(ctx, auditKey{}, rec)
}

// AuditFrom returns the record of the call ctx belongs to, or nil.
func AuditFrom(ctx context.Context) *AuditRecord {
	rec, _ := ctx.Value(auditKey{}).(*AuditRecord)
	return rec
}

// View returns what the Aggregate noted so far.
func (r *AuditRecord) View() AuditView {
	r.mu.Lock()
	defer r.mu.Unlock()
	return AuditView{User: r.user, SpeaksFor: r.speaksFor, SliceURN: r.sliceURN,
		SliverURNs: append([]string(nil), r.sliverURNs...), CredentialDigest: r.credentialDigest,
		CredentialIssuer: r.credentialIssuer, Deployed: append([]Deployment(nil), r.deployed...)}
}

// NoteAuthorization records who the credentials say is acting. Safe on nil.
func (r *AuditRecord) NoteAuthorization(a *Authorization) {
	if r == nil || a == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.speaksFor = a.User, a.Tool != ""
	r.credentialDigest, r.credentialIssuer = a.Digest, a.Issuer
}

// NoteSlice records the slice the call acts on. Safe on nil.
func (r *AuditRecord) NoteSlice(urn string) {
	if r == nil || urn == "" {
		return
	}
	r.mu.Lock()
	r.sliceURN = urn
	r.mu.Unlock()
}

// NoteSlivers adds sliver URNs the call named, created or changed. Safe on nil.
func (r *AuditRecord) NoteSlivers(urns ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range urns {
		if len(r.sliverURNs) >= maxAuditSlivers {
			return
		}
		if !slices.Contains(r.sliverURNs, u) {
			r.sliverURNs = append(r.sliverURNs, u)
		}
	}
}

// NoteDeployed records the slivers a Provision deployed. Safe on nil.
func (r *AuditRecord) NoteDeployed(slivers []Sliver) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range slivers {
		if len(r.deployed) >= maxAuditSlivers {
			return
		}
		r.deployed = append(r.deployed, Deployment{SliverURN: s.URN, Node: s.NodeName, ClientID: s.ClientID,
			ImageURL: s.Image.URL, ImageSHA256: s.Image.SHA256})
	}
}

// maxAuditSlivers bounds the URNs one audit row keeps (a slice of thousands
// of slivers is named by its slice URN anyway).
const maxAuditSlivers = 1000

// noteSlivers is NoteSlivers from the URNs of slivers.
func (r *AuditRecord) noteSliversOf(slivers []Sliver) {
	if r == nil {
		return
	}
	r.NoteSlivers(urnsOf(slivers)...)
}

// AuditOptions returns a copy of raw fit for the audit trail: SSH public
// keys (geni_users) are replaced by their count, and any option whose name
// suggests a secret by "(redacted)"; strings are clipped so a row stays small.
func AuditOptions(raw map[string]any) map[string]any {
	out := make(map[string]any, len(raw))
	keys := slices.Sorted(maps.Keys(raw))
	for i, k := range keys {
		if i >= 64 {
			out["(more)"] = len(keys) - i
			break
		}
		v := raw[k]
		switch {
		case isSecretName(k):
			out[clip(k)] = "(redacted)"
		case k == "geni_users":
			out[k] = auditUsers(v)
		default:
			out[clip(k)] = auditValue(v, 0)
		}
	}
	return out
}

func isSecretName(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"password", "passwd", "secret", "token", "private"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// auditUsers keeps the user URNs of geni_users and counts their keys.
func auditUsers(v any) any {
	list, ok := v.([]any)
	if !ok {
		return "(not a list)"
	}
	out := make([]any, 0, len(list))
	for i, e := range list {
		if i >= 100 {
			break
		}
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		u := map[string]any{}
		if urn, ok := m["urn"].(string); ok {
			u["urn"] = clip(urn)
		}
		if keys, ok := m["keys"].([]any); ok {
			u["keys"] = len(keys)
		}
		out = append(out, u)
	}
	return out
}

// auditValue copies a decoded XML-RPC value, bounded in depth and size, into
// something encoding/json writes (time as RFC 3339, bytes as their length).
func auditValue(v any, depth int) any {
	if depth > 4 {
		return "(nested too deep)"
	}
	switch x := v.(type) {
	case string:
		return clip(x)
	case time.Time:
		return rfc3339(x)
	case []byte:
		return map[string]any{"bytes": len(x)}
	case []any:
		out := make([]any, 0, min(len(x), 20))
		for i, e := range x {
			if i >= 20 {
				out = append(out, "(more)")
				break
			}
			out = append(out, auditValue(e, depth+1))
		}
		return out
	case map[string]any:
		out := map[string]any{}
		n := 0
		for k, e := range x {
			if n >= 20 {
				out["(more)"] = true
				break
			}
			if isSecretName(k) {
				out[clip(k)] = "(redacted)"
			} else {
				out[clip(k)] = auditValue(e, depth+1)
			}
			n++
		}
		return out
	case bool, int, int32, int64, float64, nil:
		return x
	}
	return "(unsupported value)"
}

// AuditCodeName labels a code in the audit trail and metrics: the geni_code
// label, or FAULT<code> for an XML-RPC fault (e.g. FAULT-32601).
func AuditCodeName(c Code) string {
	if c.Known() {
		return c.String()
	}
	return "FAULT" + strconv.Itoa(int(c))
}
