package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/geniam/geniam/am/geniclient"
)

// session is one run of geni: the configuration, the TLS client, the
// credentials fetched so far, and the aggregate of the current AM call.
type session struct {
	ctx      context.Context
	o        *options
	out, log io.Writer
	cfg      *geniclient.OmniConfig
	http     *http.Client
	userCred *geniclient.Credential
	slices   map[string]geniclient.Credential // slice URN → credential
	agg      geniclient.Aggregate
}

func newSession(ctx context.Context, o *options, stdout, stderr io.Writer) (*session, error) {
	path, err := geniclient.LocateOmniConfig(o.config)
	if err != nil {
		return nil, usagef("%v", err)
	}
	cfg, err := geniclient.LoadOmniConfig(path, o.framework)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if cfg.Framework.Cert == "" || cfg.Framework.Key == "" {
		return nil, usagef("%s: framework [%s] needs cert and key (your GENI certificate and key)", path, cfg.Framework.Name)
	}
	tlsConf, err := geniclient.TLSConfig(cfg.Framework.Cert, cfg.Framework.Key, o.caFile)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return &session{ctx: ctx, o: o, out: stdout, log: stderr, cfg: cfg, http: geniclient.NewHTTPClient(tlsConf, o.timeout),
		slices: map[string]geniclient.Credential{}}, nil
}

func (s *session) close() { s.http.CloseIdleConnections() }

func (s *session) ch() (*geniclient.CH, error) {
	if err := s.cfg.CheckFramework(); err != nil {
		return nil, usagef("%s: %v", s.cfg.Path, err)
	}
	return &geniclient.CH{RPC: &geniclient.RPC{URL: s.cfg.Framework.CH, HTTP: s.http}, CertFile: s.cfg.Framework.Cert}, nil
}

// am is the client of the current aggregate.
func (s *session) am() (*geniclient.AM, error) {
	a := &geniclient.AM{Aggregate: s.agg, RPC: &geniclient.RPC{URL: s.agg.URL, HTTP: s.http},
		SpeaksFor: s.o.speaksFor, BestEffort: s.o.bestEffort}
	for _, f := range s.o.creds {
		c, err := geniclient.ReadCredentialFile(f)
		if err != nil {
			return nil, usagef("--cred: %v", err)
		}
		a.Extra = append(a.Extra, c)
	}
	if s.o.speaksFor != "" && len(a.Extra) == 0 {
		return nil, usagef("--speaksfor needs the speaks-for credential: give it with --cred FILE")
	}
	return a, nil
}

// aggregates are the -a aggregates, or (as omni does) those the
// clearinghouse lists.
func (s *session) aggregates() ([]geniclient.Aggregate, error) {
	var out []geniclient.Aggregate
	for _, arg := range s.o.aggregates {
		a, err := s.cfg.Aggregate(arg)
		if err != nil {
			return nil, usagef("-a: %v", err)
		}
		out = append(out, a)
	}
	if len(out) > 0 {
		return out, nil
	}
	ch, err := s.ch()
	if err != nil {
		return nil, usagef("no -a given and %v", err)
	}
	v, err := ch.RPC.Call(s.ctx, "ListAggregates")
	if err != nil {
		return nil, fmt.Errorf("no -a given, and the clearinghouse did not list its aggregates: %w", err)
	}
	list, _ := v.([]any)
	for _, e := range list {
		pair, _ := e.([]any)
		if len(pair) != 2 {
			continue
		}
		urn, _ := pair[0].(string)
		url, _ := pair[1].(string)
		if a, err := s.cfg.Aggregate(url); err == nil && url != "" {
			a.URN = urn
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, usagef("no -a given and the clearinghouse lists no aggregates: name one with -a (a nickname of [aggregate_nicknames] or a URL)")
	}
	return out, nil
}

// user returns the user credential: from --usercredfile when that file
// exists (as omni reads it), else from the clearinghouse.
func (s *session) user() (geniclient.Credential, error) {
	if s.userCred != nil {
		return *s.userCred, nil
	}
	if f := s.o.userCredFile; f != "" && fileNotEmpty(f) {
		c, err := geniclient.ReadCredentialFile(f)
		if err != nil {
			return c, usagef("--usercredfile: %v", err)
		}
		fmt.Fprintf(s.log, "geni: using the user credential in %s\n", f)
		s.userCred = &c
		return c, nil
	}
	ch, err := s.ch()
	if err != nil {
		return geniclient.Credential{}, err
	}
	c, err := ch.UserCredential(s.ctx)
	if err != nil {
		return c, fmt.Errorf("user credential from the clearinghouse: %w", err)
	}
	s.userCred = &c
	return c, nil
}

// slice returns the slice URN and credential for a slice name or URN: from
// --slicecredfile when it exists and is for this slice (omni's rule), else
// from the clearinghouse.
func (s *session) slice(name string) (string, geniclient.Credential, error) {
	urn, err := s.cfg.SliceURN(name)
	if err != nil {
		return "", geniclient.Credential{}, usagef("%v", err)
	}
	if c, ok := s.slices[urn]; ok {
		return urn, c, nil
	}
	if f := s.o.sliceCredFile; f != "" && fileNotEmpty(f) {
		c, err := geniclient.ReadCredentialFile(f)
		if err != nil {
			return "", c, usagef("--slicecredfile: %v", err)
		}
		if t := c.Target(); t == urn {
			fmt.Fprintf(s.log, "geni: using the slice credential in %s\n", f)
			s.slices[urn] = c
			return urn, c, nil
		} else {
			fmt.Fprintf(s.log, "geni: %s is for %s, not %s: asking the clearinghouse\n", f, t, urn)
		}
	}
	ch, err := s.ch()
	if err != nil {
		return "", geniclient.Credential{}, err
	}
	c, err := ch.SliceCredential(s.ctx, urn)
	if err != nil {
		return "", c, fmt.Errorf("slice credential from the clearinghouse: %w", err)
	}
	s.slices[urn] = c
	return urn, c, nil
}

// targets are the URNs an AM call acts on: the -u slivers, else the slice.
func (s *session) targets(slice string) []string {
	if len(s.o.sliverURNs) > 0 {
		return s.o.sliverURNs
	}
	return []string{slice}
}

func fileNotEmpty(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Mode().IsRegular() && fi.Size() > 0
}

// names returns the -o naming options.
func (s *session) names() geniclient.OutputNames {
	return geniclient.OutputNames{Prefix: s.o.prefix, OutputFile: s.o.outputFile}
}

// save writes an -o file for the current aggregate, as omni names it.
func (s *session) save(slice, method, ext string, body []byte) (string, error) {
	name := s.names().FileName(slice, s.agg, method, ext, len(s.o.aggregates))
	if err := geniclient.WriteOutputFile(name, body); err != nil {
		return "", err
	}
	fmt.Fprintf(s.log, "geni: wrote %s\n", name)
	return name, nil
}

// cmd is the geni command line a person types next at this aggregate.
func (s *session) cmd(rest string) string {
	c := "geni"
	if s.o.config != "" {
		c += " -c " + s.o.config
	}
	if s.agg.URL != "" {
		c += " -a " + s.agg.Name()
	}
	return c + " " + rest
}

// emit prints the result of an AM call: a JSON line for scripts, or what
// human prints for people.
func (s *session) emit(method string, value any, human func(w io.Writer)) {
	if s.o.json {
		printJSONLine(s.out, map[string]any{"command": method, "aggregate": s.agg.Name(), "url": s.agg.URL, "urn": s.agg.URN, "value": value})
		return
	}
	human(s.out)
}

func printJSONLine(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// indentJSON is a value as omni's -o files hold it (json.dumps(indent=2)).
func indentJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	return b.Bytes()
}

// sliverTable prints slivers for people.
func sliverTable(w io.Writer, slivers []geniclient.Sliver) {
	if len(slivers) == 0 {
		fmt.Fprintln(w, "  (no slivers)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  CLIENT_ID\tALLOCATION\tOPERATIONAL\tEXPIRES\tSLIVER\tNOTE")
	for _, v := range slivers {
		note := v.Error
		if note == "" {
			note = v.Resource
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", dash(v.ClientID), strings.TrimPrefix(v.Allocation, "geni_"),
			dash(strings.TrimPrefix(v.Operational, "geni_")), dash(v.Expires), v.URN, note)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseTime reads a time as omni's users write it: ISO 8601 with or
// without a zone (none means UTC), a date, or a duration from now ("2h").
func parseTime(s string) (time.Time, error) {
	rel := strings.TrimPrefix(s, "+")
	if days, ok := strings.CutSuffix(rel, "d"); ok { // Go's durations stop at hours
		if n, err := strconv.Atoi(days); err == nil && n >= 0 && n < 100000 {
			return time.Now().AddDate(0, 0, n).UTC().Truncate(time.Second), nil
		}
	}
	if d, err := time.ParseDuration(rel); err == nil {
		return time.Now().Add(d).UTC().Truncate(time.Second), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999",
		"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02", "20060102"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, usagef("time %q: want ISO 8601 (2026-12-07T18:00:00Z; no zone means UTC) or a duration from now (2h30m, 3d)", s)
}
