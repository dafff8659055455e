package geniclient

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"time"
)

// AM is an AM API v3 client for one aggregate. Its calls carry only the
// options of the AM API v3 specification, so it works with any v3 aggregate.
type AM struct {
	Aggregate
	RPC *RPC
	// SpeaksFor, when set, is the URN of the user this tool speaks for
	// (omni's --speaksfor): every call carries geni_speaking_for, and
	// Extra should hold the speaks-for credential.
	SpeaksFor string
	// Extra credentials sent with every call (omni's --cred files).
	Extra []Credential
	// BestEffort sets geni_best_effort on the calls that take it.
	BestEffort bool
}

// maxRSpecBytes bounds a decompressed RSpec from an aggregate.
const maxRSpecBytes = 64 << 20

var geni3 = map[string]any{"type": "GENI", "version": "3"}

func (a *AM) options(extra map[string]any) map[string]any {
	o := map[string]any{}
	for k, v := range extra {
		o[k] = v
	}
	if a.SpeaksFor != "" {
		o["geni_speaking_for"] = a.SpeaksFor
	}
	return o
}

func (a *AM) creds(c []Credential) []any {
	return Args(append(append([]Credential{}, c...), a.Extra...)...)
}

func (a *AM) bestEffort(o map[string]any) map[string]any {
	if a.BestEffort {
		o["geni_best_effort"] = true
	}
	return o
}

// GetVersion calls GetVersion.
func (a *AM) GetVersion(ctx context.Context) (*Result, error) {
	return a.RPC.CallV3(ctx, "GetVersion", a.options(nil))
}

// ListResources returns the advertisement (decompressed).
func (a *AM) ListResources(ctx context.Context, user []Credential, available bool) (*Result, error) {
	o := a.options(map[string]any{"geni_rspec_version": geni3, "geni_compressed": true})
	if available {
		o["geni_available"] = true
	}
	r, err := a.RPC.CallV3(ctx, "ListResources", a.creds(user), o)
	if err != nil {
		return nil, err
	}
	s, ok := r.Value.(string)
	if !ok {
		return nil, &TransportError{"ListResources", a.URL, fmt.Errorf("the advertisement is %s, not a string", TypeName(r.Value))}
	}
	if r.Value, err = Decompress(s); err != nil {
		return nil, &TransportError{"ListResources", a.URL, err}
	}
	return r, nil
}

// Describe returns the manifest of urns (the slice, or slivers), decompressed.
func (a *AM) Describe(ctx context.Context, urns []string, c []Credential) (*Result, error) {
	r, err := a.RPC.CallV3(ctx, "Describe", strs(urns), a.creds(c),
		a.options(map[string]any{"geni_rspec_version": geni3, "geni_compressed": true}))
	if err != nil {
		return nil, err
	}
	if m, ok := r.Value.(map[string]any); ok {
		if s, ok := m["geni_rspec"].(string); ok {
			if m["geni_rspec"], err = Decompress(s); err != nil {
				return nil, &TransportError{"Describe", a.URL, err}
			}
		}
	}
	return r, nil
}

// Allocate asks for the resources of rspec in slice, with geni_start_time
// and geni_end_time when they are not zero (at geniam a start in the future
// books the request's nodes for [start, end)).
func (a *AM) Allocate(ctx context.Context, slice string, c []Credential, rspec string, start, end time.Time) (*Result, error) {
	o := a.options(nil)
	if !start.IsZero() {
		o["geni_start_time"] = start.UTC().Format(time.RFC3339)
	}
	if !end.IsZero() {
		o["geni_end_time"] = end.UTC().Format(time.RFC3339)
	}
	return a.RPC.CallV3(ctx, "Allocate", slice, a.creds(c), rspec, o)
}

// Provision provisions urns, installing users' SSH keys (geni_users).
func (a *AM) Provision(ctx context.Context, urns []string, c []Credential, users []map[string]any, end time.Time) (*Result, error) {
	o := a.bestEffort(a.options(map[string]any{"geni_rspec_version": geni3}))
	if len(users) > 0 {
		list := make([]any, len(users))
		for i, u := range users {
			list[i] = u
		}
		o["geni_users"] = list
	}
	if !end.IsZero() {
		o["geni_end_time"] = end.UTC().Format(time.RFC3339)
	}
	return a.RPC.CallV3(ctx, "Provision", strs(urns), a.creds(c), o)
}

// Status calls Status.
func (a *AM) Status(ctx context.Context, urns []string, c []Credential) (*Result, error) {
	return a.RPC.CallV3(ctx, "Status", strs(urns), a.creds(c), a.bestEffort(a.options(nil)))
}

// Renew asks for urns to last until t (alap: as long as possible, if not until t).
func (a *AM) Renew(ctx context.Context, urns []string, c []Credential, t time.Time, alap bool) (*Result, error) {
	o := a.bestEffort(a.options(nil))
	if alap {
		o["geni_extend_alap"] = true
	}
	return a.RPC.CallV3(ctx, "Renew", strs(urns), a.creds(c), t.UTC().Format(time.RFC3339), o)
}

// PerformOperationalAction performs action on urns.
func (a *AM) PerformOperationalAction(ctx context.Context, urns []string, c []Credential, action string) (*Result, error) {
	return a.RPC.CallV3(ctx, "PerformOperationalAction", strs(urns), a.creds(c), action, a.bestEffort(a.options(nil)))
}

// Delete deletes urns.
func (a *AM) Delete(ctx context.Context, urns []string, c []Credential) (*Result, error) {
	return a.RPC.CallV3(ctx, "Delete", strs(urns), a.creds(c), a.bestEffort(a.options(nil)))
}

// Shutdown stops everything of slice (an operator's emergency stop).
func (a *AM) Shutdown(ctx context.Context, slice string, c []Credential) (*Result, error) {
	return a.RPC.CallV3(ctx, "Shutdown", slice, a.creds(c), a.options(nil))
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// Decompress undoes geni_compressed (zlib, then base64). An RSpec that is
// already XML is returned as it is: an aggregate may ignore the option.
func Decompress(s string) (string, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "<") || strings.TrimSpace(s) == "" {
		return s, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		return "", fmt.Errorf("the RSpec is neither XML nor base64 (geni_compressed): %w", err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("the compressed RSpec is not zlib data: %w", err)
	}
	defer zr.Close()
	b, err := io.ReadAll(io.LimitReader(zr, maxRSpecBytes+1))
	if err != nil {
		return "", fmt.Errorf("the compressed RSpec: %w", err)
	}
	if len(b) > maxRSpecBytes {
		return "", fmt.Errorf("the compressed RSpec inflates to more than %d bytes", maxRSpecBytes)
	}
	return string(b), nil
}

// Sliver is one entry of geni_slivers.
type Sliver struct {
	URN         string
	ClientID    string
	Allocation  string
	Operational string
	Expires     string
	Error       string
	Resource    string // geni_resource_status
	Start       string // geni_start_time: a booking's window is [Start, Expires) (geniam)
}

// Slivers reads geni_slivers from a value: a struct holding it (Allocate,
// Provision, Describe, Status) or the list itself (Renew, POA, Delete).
func Slivers(v any) []Sliver {
	if m, ok := v.(map[string]any); ok {
		v = m["geni_slivers"]
	}
	list, _ := v.([]any)
	var out []Sliver
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		s := func(k string) string {
			switch x := m[k].(type) {
			case string:
				return x
			case time.Time:
				return x.UTC().Format(time.RFC3339)
			case nil:
				return ""
			default:
				return fmt.Sprint(x)
			}
		}
		out = append(out, Sliver{URN: s("geni_sliver_urn"), ClientID: s("geni_client_id"), Allocation: s("geni_allocation_status"),
			Operational: s("geni_operational_status"), Expires: s("geni_expires"), Error: s("geni_error"), Resource: s("geni_resource_status"),
			Start: s("geni_start_time")})
	}
	return out
}
