package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/geniam/geniam/am/geniclient"
)

// The AM API v3 verbs (their table: verbs in main.go).

func getVersion(s *session, _ []string) error {
	a, err := s.am()
	if err != nil {
		return err
	}
	r, err := a.GetVersion(s.ctx)
	if err != nil {
		return err
	}
	if s.o.output {
		if _, err := s.save("", "getversion", ".json", indentJSON(r.Value)); err != nil {
			return err
		}
	}
	s.emit("getversion", r.Value, func(w io.Writer) {
		fmt.Fprintf(w, "AM %s (%s) has version:\n", s.agg.Name(), s.agg.URL)
		m, _ := r.Value.(map[string]any)
		keys := slices.Sorted(maps.Keys(m))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%s\n", k, brief(m[k]))
		}
		tw.Flush()
	})
	return nil
}

// brief shows a value on one line.
func brief(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = brief(e)
		}
		return strings.Join(parts, ", ")
	case map[string]any:
		if t, ok := x["type"]; ok && x["version"] != nil {
			return fmt.Sprintf("%v %v", t, x["version"])
		}
		if t, ok := x["geni_type"]; ok {
			return fmt.Sprintf("%v %v", t, x["geni_version"])
		}
		keys := slices.Sorted(maps.Keys(x))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ": " + brief(x[k])
		}
		return strings.Join(parts, ", ")
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	}
	return fmt.Sprint(v)
}

// rspecFile is an RSpec as omni's -o writes it: the XML declaration, then
// omni's comment naming the aggregate (and slice), then the document.
func rspecFile(rspec, slice string, a geniclient.Aggregate) []byte {
	header := fmt.Sprintf("<!-- Resources at AM:\n\tURN: %s\n\tURL: %s\n -->", a.URN, a.URL)
	if slice != "" {
		header = fmt.Sprintf("<!-- Reserved resources for:\n\tSlice: %s\n\tat AM:\n\tURN: %s\n\tURL: %s\n -->", slice, a.URN, a.URL)
	}
	if i := strings.Index(rspec, "<?xml"); i >= 0 {
		if j := strings.Index(rspec[i:], "?>"); j >= 0 {
			cut := i + j + 2
			return []byte(rspec[:cut] + "\n  " + header + "\n  " + rspec[cut:] + "\n")
		}
	}
	return []byte(rspec + "\n")
}

func listResources(s *session, args []string) error {
	if len(args) > 0 { // omni -V3 says the same
		return usagef("in AM API v3 a slice's resources are listed by describe: geni describe %s", args[0])
	}
	a, err := s.am()
	if err != nil {
		return err
	}
	user, err := s.user()
	if err != nil {
		return err
	}
	r, err := a.ListResources(s.ctx, []geniclient.Credential{user}, s.o.available)
	if err != nil {
		return err
	}
	ad := r.Value.(string)
	if s.o.output {
		if _, err := s.save("", "rspec", ".xml", rspecFile(ad, "", s.agg)); err != nil {
			return err
		}
	}
	nodes, perr := geniclient.ParseAdvertisement(ad)
	s.emit("listresources", r.Value, func(w io.Writer) {
		if perr != nil {
			fmt.Fprintf(w, "%s: %v\n", s.agg.Name(), perr)
			return
		}
		free := 0
		for _, n := range nodes {
			if n.Available == "true" {
				free++
			}
		}
		fmt.Fprintf(w, "%s advertises %d nodes (%d available now):\n", s.agg.Name(), len(nodes), free)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tAVAILABLE\tSLIVER TYPES\tCOMPONENT_ID")
		for _, n := range nodes {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", dash(n.ComponentName), dash(n.Available), dash(strings.Join(n.SliverTypes, ",")), n.ComponentID)
		}
		tw.Flush()
		if !s.o.output {
			fmt.Fprintf(w, "The RSpec itself: %s\n", s.cmd("-o listresources"))
		}
	})
	return nil
}

func describe(s *session, args []string) error {
	return s.sliceVerb(args[0], "describe", ".json", "describe", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.Describe(s.ctx, urns, c)
	}, func(w io.Writer, urn string, v any) {
		fmt.Fprintf(w, "Slice %s at %s:\n", urn, s.agg.Name())
		m, _ := v.(map[string]any)
		rspec, _ := m["geni_rspec"].(string)
		nodeTable(w, rspec)
		sliverTable(w, geniclient.Slivers(v))
	})
}

// nodeTable prints the manifest's nodes and how to reach them.
func nodeTable(w io.Writer, manifest string) {
	nodes, err := geniclient.ParseManifest(manifest)
	if err != nil {
		fmt.Fprintf(w, "  manifest: %v\n", err)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tCOMPONENT\tLOGIN\tDATA")
	for _, n := range nodes {
		login := "-"
		if len(n.Logins) > 0 {
			l := n.Logins[0]
			login = fmt.Sprintf("ssh -p %s %s@%s", dash(l.Port), dash(l.Username), l.Hostname)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", dash(n.ClientID), dash(n.ComponentID), login, dash(n.DataURL))
	}
	tw.Flush()
}

func allocate(s *session, args []string) error {
	rspec, err := os.ReadFile(args[1])
	if err != nil {
		return usagef("request RSpec: %v", err)
	}
	end, err := s.endTime()
	if err != nil {
		return err
	}
	var start time.Time
	if s.o.startTime != "" {
		if start, err = parseTime(s.o.startTime); err != nil {
			return err
		}
	}
	return s.sliceVerb(args[0], "allocate", ".json", "allocate", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.Allocate(s.ctx, slice, c, string(rspec), start, end)
	}, func(w io.Writer, urn string, v any) {
		slivers := geniclient.Slivers(v)
		fmt.Fprintf(w, "Allocated %d slivers in slice %s at %s:\n", len(slivers), urn, s.agg.Name())
		sliverTable(w, slivers)
		if !start.IsZero() {
			fmt.Fprintf(w, "Booked from %s. Next: provision any time before the end (it is set up at the start): %s\n",
				start.UTC().Format(time.RFC3339), s.cmd("provision "+args[0]))
			return
		}
		fmt.Fprintf(w, "Next: provision before the hold expires: %s\n", s.cmd("provision "+args[0]))
	})
}

// endTime is --end-time, if given.
func (s *session) endTime() (time.Time, error) {
	if s.o.endTime == "" {
		return time.Time{}, nil
	}
	return parseTime(s.o.endTime)
}

// geniUsers are omni_config's users with their SSH public keys, as omni
// sends them in Provision's geni_users.
func (s *session) geniUsers() []map[string]any {
	var out []map[string]any
	for _, u := range s.cfg.Users {
		var keys []any
		for _, f := range u.KeyFiles {
			b, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintf(s.log, "geni: user %s: SSH key %v (skipped)\n", u.Name, err)
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					keys = append(keys, line)
				}
			}
		}
		if u.URN == "" || len(keys) == 0 {
			fmt.Fprintf(s.log, "geni: user %s has no urn or no SSH key in omni_config: not sent\n", u.Name)
			continue
		}
		out = append(out, map[string]any{"urn": u.URN, "keys": keys})
	}
	return out
}

func provision(s *session, args []string) error {
	end, err := s.endTime()
	if err != nil {
		return err
	}
	users := s.geniUsers()
	return s.sliceVerb(args[0], "provision", ".json", "provision", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.Provision(s.ctx, urns, c, users, end)
	}, func(w io.Writer, urn string, v any) {
		slivers := geniclient.Slivers(v)
		fmt.Fprintf(w, "Provisioned %d slivers in slice %s at %s (SSH keys of %d users sent):\n", len(slivers), urn, s.agg.Name(), len(users))
		sliverTable(w, slivers)
		fmt.Fprintf(w, "Next: wait until they are ready: %s\n", s.cmd("wait "+args[0]))
	})
}

func status(s *session, args []string) error {
	return s.sliceVerb(args[0], "status", ".json", "status", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.Status(s.ctx, urns, c)
	}, func(w io.Writer, urn string, v any) {
		slivers := geniclient.Slivers(v)
		fmt.Fprintf(w, "Status of slice %s at %s:\n", urn, s.agg.Name())
		sliverTable(w, slivers)
		if next := nextAfterStatus(s, args[0], slivers); next != "" {
			fmt.Fprintln(w, next)
		}
	})
}

// nextAfterStatus suggests the command that moves the slice on.
func nextAfterStatus(s *session, slice string, slivers []geniclient.Sliver) string {
	allocated, ready, failed := 0, 0, 0
	for _, v := range slivers {
		switch {
		case v.Operational == "geni_failed":
			failed++
		case v.Allocation == "geni_allocated":
			allocated++
		case v.Operational == "geni_ready" || v.Operational == "geni_ready_busy":
			ready++
		}
	}
	switch {
	case len(slivers) == 0:
		return ""
	case failed > 0:
		return fmt.Sprintf("%d slivers failed (NOTE says why). Output: %s; start again: %s", failed, s.cmd("logs "+slice), s.cmd("poa "+slice+" geni_start"))
	case allocated > 0:
		return "Next: " + s.cmd("provision "+slice)
	case ready == len(slivers):
		return "Ready. Log in: " + s.cmd("ssh "+slice+" [CLIENT_ID]") + "; data: " + s.cmd("data "+slice)
	}
	return "Next: " + s.cmd("wait "+slice)
}

func renew(s *session, args []string) error {
	t, err := parseTime(args[1])
	if err != nil {
		return err
	}
	return s.sliverVerb(args[0], "renewal", ".json", "renew", "Renewed slivers of", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		// omni refuses to renew slivers past their slice's expiry.
		if exp := c[0].Expires(); !exp.IsZero() && t.After(exp) && !s.o.alap {
			return nil, fmt.Errorf("cannot renew slivers until %s: the slice expires at %s; renew the slice first (%s)",
				t.Format(time.RFC3339), exp.Format(time.RFC3339), s.cmd("renewslice "+args[0]+" "+t.Format(time.RFC3339)))
		}
		return a.Renew(s.ctx, urns, c, t, s.o.alap)
	})
}

func poa(s *session, args []string) error {
	action := args[1]
	return s.sliverVerb(args[0], "poa-"+action, "", "performoperationalaction", action+" on", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.PerformOperationalAction(s.ctx, urns, c, action)
	})
}

func deleteSlivers(s *session, args []string) error {
	return s.sliverVerb(args[0], "delete", ".json", "delete", "Deleted slivers of", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.Delete(s.ctx, urns, c)
	})
}

// sliverVerb is a verb whose answer is the slice's slivers: it makes the
// call with sliceCall and prints "<title> slice <urn> at <aggregate>:" over
// the sliver table.
func (s *session) sliverVerb(slice, method, ext, verb, title string, call amCall) error {
	return s.sliceVerb(slice, method, ext, verb, call, func(w io.Writer, urn string, v any) {
		fmt.Fprintf(w, "%s slice %s at %s:\n", title, urn, s.agg.Name())
		sliverTable(w, geniclient.Slivers(v))
	})
}

// sliceVerb is a verb that makes one call with sliceCall and emits its value
// under verb; show prints it for people.
func (s *session) sliceVerb(slice, method, ext, verb string, call amCall, show func(w io.Writer, urn string, value any)) error {
	urn, r, err := s.sliceCall(slice, method, ext, call)
	if err != nil {
		return err
	}
	s.emit(verb, r.Value, func(w io.Writer) { show(w, urn, r.Value) })
	return nil
}

func shutdown(s *session, args []string) error {
	return s.sliceVerb(args[0], "", "", "shutdown", func(a *geniclient.AM, slice string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		return a.Shutdown(s.ctx, slice, c)
	}, func(w io.Writer, urn string, _ any) {
		fmt.Fprintf(w, "Shut down slice %s at %s: its slivers are stopped and kept for the operators.\n", urn, s.agg.Name())
	})
}

// amCall is one AM API call on a slice: its URN, the -u slivers (or the
// slice) and the slice's credentials.
type amCall func(a *geniclient.AM, slice string, urns []string, creds []geniclient.Credential) (*geniclient.Result, error)

// sliceCall makes one AM call on a slice (or its -u slivers) at the
// current aggregate with the slice's credential, and with -o saves the value
// under omni's name for the method.
func (s *session) sliceCall(slice, method, ext string, call amCall) (string, *geniclient.Result, error) {
	a, err := s.am()
	if err != nil {
		return "", nil, err
	}
	urn, cred, err := s.slice(slice)
	if err != nil {
		return "", nil, err
	}
	r, err := call(a, urn, s.targets(urn), []geniclient.Credential{cred})
	if err != nil {
		return urn, nil, err
	}
	if s.o.output && method != "" {
		if ext == "" { // omni saves a list as text and a struct as JSON
			ext = ".txt"
			if _, ok := r.Value.(map[string]any); ok {
				ext = ".json"
			}
		}
		if _, err := s.save(slice, method, ext, indentJSON(r.Value)); err != nil {
			return urn, nil, err
		}
	}
	return urn, r, nil
}
