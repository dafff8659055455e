package geniapi

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
)

// methodSpec describes one AM API method: its parameter names in order (for
// the arity check, messages and parsing: dispatch turns each name into its
// typed argument) and how to run it once they are parsed.
type methodSpec struct {
	params   []string
	optional int  // trailing params that may be left out (GetVersion's options)
	rspec    bool // answers with an RSpec, so geni_rspec_version is required
	run      func(ctx context.Context, api am.API, c *am.Call, a args) (any, error)
}

var methods = map[string]methodSpec{
	"GetVersion":               {params: []string{"options"}, optional: 1, run: getVersion},
	"ListResources":            {params: []string{"credentials", "options"}, rspec: true, run: listResources},
	"Describe":                 {params: []string{"urns", "credentials", "options"}, rspec: true, run: describe3},
	"Allocate":                 {params: []string{"slice_urn", "credentials", "rspec", "options"}, run: allocate},
	"Renew":                    {params: []string{"urns", "credentials", "expiration_time", "options"}, run: renew},
	"Provision":                {params: []string{"urns", "credentials", "options"}, rspec: true, run: provision},
	"Status":                   {params: []string{"urns", "credentials", "options"}, run: status},
	"PerformOperationalAction": {params: []string{"urns", "credentials", "action", "options"}, run: performOperationalAction},
	"Delete":                   {params: []string{"urns", "credentials", "options"}, run: deleteSlivers},
	"Shutdown":                 {params: []string{"slice_urn", "credentials", "options"}, run: shutdown},
}

// args are a call's typed arguments other than credentials and options
// (those go into the am.Call), named as in methodSpec.params.
type args struct {
	urns       []string
	slice      string
	rspec      string
	expiration time.Time
	action     string
}

// parse reads the parameter called name into its field.
func (a *args) parse(name string, v any) (err error) {
	switch name {
	case "urns":
		a.urns, err = parseURNs(v)
	case "slice_urn":
		a.slice, err = parseSliceURN(v, name)
	case "rspec":
		a.rspec, err = stringArg(v, name)
	case "expiration_time":
		a.expiration, err = timeArg(v, name)
	case "action":
		if a.action, err = stringArg(v, name); err == nil && a.action == "" {
			err = badArgs("action is empty")
		}
	}
	return err
}

// dispatch checks the arity, parses credentials and options, then the other
// arguments in order, and runs the method. The order fixes which of several
// bad arguments a caller hears about.
func (h *Handler) dispatch(ctx context.Context, c *am.Call, call *xmlrpc.Call, spec methodSpec) (any, error) {
	p := call.Params
	if n, max := len(p), len(spec.params); n > max || n < max-spec.optional {
		want := "(" + strings.Join(spec.params, ", ") + ")"
		return nil, badArgs("%s takes %d arguments %s, got %d", call.Method, max, want, n)
	}
	for i, v := range p {
		var err error
		switch spec.params[i] {
		case "credentials":
			c.Credentials, err = parseCredentials(v)
		case "options":
			c.Options, err = parseOptions(v)
		}
		if err != nil {
			return nil, err
		}
	}
	var a args
	for i, v := range p {
		if err := a.parse(spec.params[i], v); err != nil {
			return nil, err
		}
	}
	if spec.rspec {
		if err := am.CheckRSpecVersion(c.Options); err != nil {
			return nil, err
		}
	}
	return spec.run(ctx, h.api, c, a)
}

var errNilResult = errors.New("am.API returned a nil result without an error")

// nonNil passes on what an am.API call returned, turning a nil result
// without an error (a broken implementation) into errNilResult, so that no
// method dereferences it.
func nonNil[T any](res *T, err error) (*T, error) {
	if err == nil && res == nil {
		return nil, errNilResult
	}
	return res, err
}

func getVersion(ctx context.Context, api am.API, c *am.Call, _ args) (any, error) {
	v, err := nonNil(api.GetVersion(ctx, *c))
	if err != nil {
		return nil, err
	}
	return versionValue(v), nil
}

func listResources(ctx context.Context, api am.API, c *am.Call, _ args) (any, error) {
	if _, ok := c.Options.Raw["geni_slice_urn"]; ok {
		return nil, badArgs("option geni_slice_urn is AM API v2; use Describe to see a slice")
	}
	rspec, err := api.ListResources(ctx, *c)
	if err != nil {
		return nil, err
	}
	if c.Options.Compressed {
		return compressAdvertisement(rspec)
	}
	return rspec, nil
}

func describe3(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	res, err := nonNil(api.Describe(ctx, *c, a.urns))
	if err != nil {
		return nil, err
	}
	rspec, err := maybeCompress(res.RSpec, c.Options.Compressed)
	if err != nil {
		return nil, err
	}
	return map[string]any{"geni_rspec": rspec, "geni_urn": res.SliceURN, "geni_slivers": sliverValues(res.Slivers)}, nil
}

func allocate(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	return allocateValue(api.Allocate(ctx, *c, a.slice, a.rspec))
}

func renew(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	return sliversValue(api.Renew(ctx, *c, a.urns, a.expiration))
}

func provision(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	return allocateValue(api.Provision(ctx, *c, a.urns))
}

func status(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	res, err := nonNil(api.Status(ctx, *c, a.urns))
	if err != nil {
		return nil, err
	}
	slivers := sliverValues(res.Slivers)
	for _, s := range slivers { // Status must carry geni_error, "" at least
		if _, ok := s["geni_error"]; !ok {
			s["geni_error"] = ""
		}
	}
	return map[string]any{"geni_urn": res.SliceURN, "geni_slivers": slivers}, nil
}

func performOperationalAction(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	return sliversValue(api.PerformOperationalAction(ctx, *c, a.urns, a.action))
}

func deleteSlivers(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	return sliversValue(api.Delete(ctx, *c, a.urns))
}

func shutdown(ctx context.Context, api am.API, c *am.Call, a args) (any, error) {
	if err := api.Shutdown(ctx, *c, a.slice); err != nil {
		return nil, err
	}
	return true, nil
}

// FormatTime writes a time as every GENI client reads it: RFC 3339 in UTC
// without fractional seconds.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func sliverValue(s am.SliverStatus) map[string]any {
	m := map[string]any{
		"geni_sliver_urn":        s.URN,
		"geni_allocation_status": string(s.Allocation),
		"geni_expires":           FormatTime(s.Expires),
	}
	if s.Operational != "" {
		m["geni_operational_status"] = string(s.Operational)
	}
	if s.ErrorSet || s.Error != "" {
		m["geni_error"] = s.Error
	}
	if s.ResourceMsg != "" {
		m["geni_resource_status"] = s.ResourceMsg
	}
	if s.ClientID != "" {
		m["geni_client_id"] = s.ClientID // as ProtoGENI does
	}
	// Our extension: the start command's exit code and its last output
	// lines (bounded by the node agent), so omni's status shows them.
	if s.ExitCode != nil {
		m["geniam_exit_code"] = *s.ExitCode
	}
	if s.StdoutTail != "" {
		m["geniam_stdout_tail"] = s.StdoutTail
	}
	if s.StderrTail != "" {
		m["geniam_stderr_tail"] = s.StderrTail
	}
	if s.DataURL != "" {
		m["geniam_data_url"] = s.DataURL
	}
	if s.LogURL != "" {
		m["geniam_log_url"] = s.LogURL
	}
	if !s.Starts.IsZero() {
		m["geni_start_time"] = FormatTime(s.Starts) // a reservation: its window is [geni_start_time, geni_expires)
	}
	return m
}

func sliverValues(list []am.SliverStatus) []map[string]any {
	out := make([]map[string]any, 0, len(list))
	for _, s := range list {
		out = append(out, sliverValue(s))
	}
	return out
}

// sliversValue is the answer of the calls that return their slivers' status.
func sliversValue(list []am.SliverStatus, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return sliverValues(list), nil
}

// allocateValue is the answer of Allocate and Provision: manifest and slivers.
func allocateValue(res *am.AllocateResult, err error) (any, error) {
	res, err = nonNil(res, err)
	if err != nil {
		return nil, err
	}
	return map[string]any{"geni_rspec": res.RSpec, "geni_slivers": sliverValues(res.Slivers)}, nil
}

// maybeCompress applies geni_compressed: base64 of the zlib (RFC 1950) stream.
func maybeCompress(rspec string, compressed bool) (string, error) {
	if !compressed {
		return rspec, nil
	}
	var b bytes.Buffer
	z := zlib.NewWriter(&b)
	if _, err := z.Write([]byte(rspec)); err != nil {
		return "", err
	}
	if err := z.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b.Bytes()), nil
}

func rspecVersionValues(list []am.RSpecVersion) []map[string]any {
	out := make([]map[string]any, 0, len(list))
	for _, v := range list {
		ext := v.Extensions
		if ext == nil {
			ext = []string{}
		}
		out = append(out, map[string]any{"type": v.Type, "version": v.Version, "schema": v.Schema,
			"namespace": v.Namespace, "extensions": ext})
	}
	return out
}

// versionValue is GetVersion's value. The types matter: the acceptance test
// wants geni_api and geni_single_allocation as <int>, geni_api_versions keyed
// by the string "3", and extensions as arrays.
func versionValue(v *am.Version) map[string]any {
	m := make(map[string]any, len(v.Extra)+11)
	for k, x := range v.Extra {
		m[k] = x
	}
	creds := make([]map[string]any, 0, len(v.CredentialTypes))
	for _, c := range v.CredentialTypes {
		creds = append(creds, map[string]any{"geni_type": c.Type, "geni_version": c.Version})
	}
	m["geni_api"] = am.APIVersion
	m["geni_api_versions"] = map[string]any{"3": v.URL}
	m["geni_request_rspec_versions"] = rspecVersionValues(v.RequestRSpecVersions)
	m["geni_ad_rspec_versions"] = rspecVersionValues(v.AdRSpecVersions)
	m["geni_credential_types"] = creds
	m["geni_single_allocation"] = am.SingleAllocation
	m["geni_allocate"] = am.AllocateMode
	m["geni_am_type"] = am.AMType
	m["geni_am_code"] = v.CodeVersion
	m["urn"] = v.URN
	return m
}
