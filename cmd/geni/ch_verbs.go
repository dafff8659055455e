package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/geniam/geniam/am/geniclient"
)

// The clearinghouse verbs (their table: verbs in main.go).

// credSummary prints a credential for people, or the credential as omni
// saves it for --json.
func (s *session) credSummary(what string, c geniclient.Credential, file string) {
	if s.o.json {
		printJSONLine(s.out, map[string]any{"command": what, "credential": c, "target": c.Target(), "owner": c.Owner(),
			"expires": c.Expires(), "file": file})
		return
	}
	fmt.Fprintf(s.out, "%s credential for %s\n  owner    %s\n  expires  %s\n", what, c.Target(), c.Owner(), c.Expires().Format(time.RFC3339))
	if file != "" {
		fmt.Fprintf(s.out, "  saved to %s (use it with --%scredfile %s)\n", file, map[string]string{"user": "user", "slice": "slice"}[what], file)
	}
}

func getUserCred(s *session, _ []string) error {
	c, err := s.user()
	if err != nil {
		return err
	}
	file := ""
	if s.o.output {
		name := s.o.userCredFile
		if name == "" {
			name = s.names().UserCredName(userName(c.Owner()), s.cfg.Framework.Name)
		}
		if file, err = geniclient.SaveCredential(name, c); err != nil {
			return err
		}
	}
	s.credSummary("user", c, file)
	return nil
}

// userName is the name part of a user URN, as omni takes it for file names.
func userName(urn string) string {
	if i := strings.LastIndex(urn, "+user+"); i >= 0 {
		return urn[i+len("+user+"):]
	}
	return ""
}

// saveSliceCred saves with -o as omni's _maybe_save_slicecred does.
func (s *session) saveSliceCred(slice string, c geniclient.Credential) (string, error) {
	if !s.o.output {
		return "", nil
	}
	name := s.o.sliceCredFile
	if name == "" {
		name = s.names().SliceCredName(geniclient.SliceName(slice))
	}
	return geniclient.SaveCredential(name, c)
}

func createSlice(s *session, args []string) error {
	urn, err := s.cfg.SliceURN(args[0])
	if err != nil {
		return usagef("%v", err)
	}
	ch, err := s.ch()
	if err != nil {
		return err
	}
	c, err := ch.CreateSlice(s.ctx, urn)
	if err != nil {
		return err
	}
	s.slices[urn] = c
	file, err := s.saveSliceCred(args[0], c)
	if err != nil {
		return err
	}
	if s.o.json {
		s.credSummary("slice", c, file)
		return nil
	}
	fmt.Fprintf(s.out, "Created slice with Name %s, URN %s, Expiration %s\n", geniclient.SliceName(urn), urn, c.Expires().Format(time.RFC3339))
	if file != "" {
		fmt.Fprintf(s.out, "Saved its credential to %s\n", file)
	}
	s.agg = geniclient.Aggregate{Nick: "AGGREGATE", URL: "-"}
	if len(s.o.aggregates) > 0 {
		s.agg.Nick = s.o.aggregates[0]
	} else if len(s.cfg.Nicknames) == 1 {
		for nick := range s.cfg.Nicknames {
			s.agg.Nick = nick
		}
	}
	fmt.Fprintf(s.out, "Next: %s\n", s.cmd("allocate "+args[0]+" REQUEST.xml"))
	return nil
}

func getSliceCred(s *session, args []string) error {
	_, c, err := s.slice(args[0])
	if err != nil {
		return err
	}
	file, err := s.saveSliceCred(args[0], c)
	if err != nil {
		return err
	}
	s.credSummary("slice", c, file)
	return nil
}

func renewSlice(s *session, args []string) error {
	urn, err := s.cfg.SliceURN(args[0])
	if err != nil {
		return usagef("%v", err)
	}
	t, err := parseTime(args[1])
	if err != nil {
		return err
	}
	ch, err := s.ch()
	if err != nil {
		return err
	}
	exp, err := ch.RenewSlice(s.ctx, urn, t)
	if err != nil {
		return err
	}
	if s.o.json {
		printJSONLine(s.out, map[string]any{"command": "renewslice", "slice": urn, "expires": exp})
		return nil
	}
	fmt.Fprintf(s.out, "Slice %s now expires at %s\n", urn, exp.Format(time.RFC3339))
	return nil
}

func listAggregates(s *session, _ []string) error {
	s.o.aggregates = nil
	aggs, err := s.aggregates()
	if err != nil {
		return err
	}
	if s.o.json {
		printJSONLine(s.out, map[string]any{"command": "listaggregates", "aggregates": aggs})
		return nil
	}
	tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NICKNAME\tURN\tURL")
	for _, a := range aggs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", dash(a.Nick), dash(a.URN), a.URL)
	}
	return tw.Flush()
}
