package console

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store"
)

// The data of each page. Filters come from the query string; an
// experimenter's are narrowed to their own slices here, before the store is
// asked, so no row of another slice ever reaches a template.

type overviewData struct {
	Nodes, NodesOK, SlotsUsed, SlotsTotal, Unreachable int
	Slivers                                            slivers
	JobsQueued, JobsFailed                             int // counted up to jobsCounted
	Range                                              string
}

func (c *Console) overview(r *http.Request, v *viewer) (string, any, error) {
	ctx := r.Context()
	d := overviewData{Range: rangeOf(r)}
	f := store.SliverFilter{}
	if !v.Operator {
		f.Slices = v.Slices
	}
	var err error
	if d.Slivers, err = c.listSlivers(ctx, f, overviewSlivers); err != nil {
		return "", nil, err
	}
	if !v.Operator {
		return "Your slivers", d, nil
	}
	nodes, err := c.cfg.Source.Nodes(ctx)
	if err != nil {
		return "", nil, err
	}
	health, err := c.cfg.Source.AgentHealth(ctx)
	if err != nil {
		return "", nil, err
	}
	for _, n := range nodes {
		if n.State == "retired" {
			continue
		}
		d.Nodes++
		if n.State == "ok" {
			d.NodesOK++
		}
		d.SlotsUsed += n.Used
		d.SlotsTotal += n.Capacity
		if h, ok := health[n.Name]; ok && !h.Reachable {
			d.Unreachable++
		}
	}
	for _, st := range []string{"queued", "failed"} {
		_, rows, err := c.cfg.Source.Jobs(ctx, store.JobFilter{State: st, Limit: jobsCounted})
		if err != nil && !store.IsNoJobs(err) {
			return "", nil, err
		}
		if st == "queued" {
			d.JobsQueued = len(rows)
		} else {
			d.JobsFailed = len(rows)
		}
	}
	return "Overview", d, nil
}

// jobsCounted bounds the overview's job counts (shown as "1000+").
const jobsCounted = 1000

type nodeView struct {
	store.NodeRow
	Health *store.AgentHealthRow
}

func (c *Console) nodes(r *http.Request, v *viewer) (string, any, error) {
	nodes, err := c.cfg.Source.Nodes(r.Context())
	if err != nil {
		return "", nil, err
	}
	health, err := c.cfg.Source.AgentHealth(r.Context())
	if err != nil {
		return "", nil, err
	}
	out := make([]nodeView, len(nodes))
	for i, n := range nodes {
		out[i].NodeRow = n
		if h, ok := health[n.Name]; ok {
			out[i].Health = &h
		}
	}
	return "Nodes", out, nil
}

// slivers is a table's rows, cut at a bound: every open page renders its
// tables again at each change, so none grows with the aggregate.
type slivers struct {
	Rows []am.Sliver
	More bool // there are more than Rows
}

// overviewSlivers and pageSlivers bound the overview's and the slivers
// page's tables.
const overviewSlivers, pageSlivers = 50, 1000

func (c *Console) listSlivers(ctx context.Context, f store.SliverFilter, max int) (slivers, error) {
	f.Limit = max + 1
	rows, err := c.cfg.Source.AdminSlivers(ctx, f)
	if len(rows) > max {
		return slivers{Rows: rows[:max], More: true}, err
	}
	return slivers{Rows: rows}, err
}

func (c *Console) slivers(r *http.Request, v *viewer) (string, any, error) {
	q := r.URL.Query()
	f := store.SliverFilter{Node: q.Get("node"), Slice: q.Get("slice"), User: q.Get("user")}
	if !v.Operator {
		f.Slices = v.Slices
	}
	out, err := c.listSlivers(r.Context(), f, pageSlivers)
	return "Slivers", out, err
}

type sliverData struct {
	Sliver  *am.Sliver // nil once it is gone
	URN     string
	Slice   string
	History []store.HistoryRow
	Data    bool // /data can be downloaded through the console
}

func (c *Console) sliver(r *http.Request, v *viewer) (string, any, error) {
	urn := r.URL.Query().Get("urn")
	if urn == "" {
		return "", nil, am.Errorf(am.BadArgs, "which sliver? /sliver?urn=...")
	}
	live, err := c.cfg.Source.AdminSlivers(r.Context(), store.SliverFilter{URN: urn})
	if err != nil {
		return "", nil, err
	}
	hist, err := c.cfg.Source.SliverHistory(r.Context(), urn)
	if err != nil {
		return "", nil, err
	}
	d := sliverData{URN: urn, History: hist, Data: c.cfg.Data != nil}
	if len(live) > 0 {
		d.Sliver, d.Slice = &live[0], live[0].SliceURN
	} else if len(hist) > 0 {
		d.Slice = sliceOfHistory(r, c, urn)
	}
	if err := c.openSlice(r, v, "sliver", d.Slice, urn); err != nil {
		return "", nil, err
	}
	return "Sliver " + shortName(urn), d, nil
}

// sliceOfHistory finds the slice of a gone sliver from the audit trail's
// rows that name it.
func sliceOfHistory(r *http.Request, c *Console, urn string) string {
	rows, err := c.cfg.Source.Audit(r.Context(), store.AuditFilter{Sliver: urn, Limit: 1})
	if err != nil || len(rows) == 0 {
		return ""
	}
	return rows[0].Slice
}

type jobsData struct {
	Columns []string
	Rows    [][]string
	Missing bool
}

func (c *Console) jobs(r *http.Request, v *viewer) (string, any, error) {
	q := r.URL.Query()
	cols, rows, err := c.cfg.Source.Jobs(r.Context(), store.JobFilter{Node: q.Get("node"), Slice: q.Get("slice"), State: q.Get("state"), Limit: 200})
	if store.IsNoJobs(err) {
		return "Jobs", jobsData{Missing: true}, nil
	}
	return "Jobs", jobsData{Columns: cols, Rows: rows}, err
}

type auditData struct {
	Rows []store.AuditRow
}

func (c *Console) audit(r *http.Request, v *viewer) (string, any, error) {
	q := r.URL.Query()
	f := store.AuditFilter{User: strings.TrimSpace(q.Get("user")), Slice: strings.TrimSpace(q.Get("slice")),
		Node: strings.TrimSpace(q.Get("node")), LogID: strings.TrimSpace(q.Get("log_id")), Limit: 200}
	if !v.Operator {
		// An experimenter's own calls only, whatever the filter asks.
		f.User = v.User
	}
	rows, err := c.cfg.Source.Audit(r.Context(), f)
	return "Audit trail", auditData{Rows: rows}, err
}

// rangeOf reads ?range= for the usage chart.
func rangeOf(r *http.Request) string {
	if _, ok := ranges[r.URL.Query().Get("range")]; ok {
		return r.URL.Query().Get("range")
	}
	return "24h"
}

// ranges are the usage chart's spans and their sampling steps.
var ranges = map[string][2]time.Duration{
	"1h":  {time.Hour, time.Minute},
	"24h": {24 * time.Hour, 15 * time.Minute},
	"7d":  {7 * 24 * time.Hour, 2 * time.Hour},
}

// shortName is the last part of a URN (a sliver's or slice's name).
func shortName(urn string) string {
	return urn[strings.LastIndex(urn, "+")+1:]
}

var funcs = template.FuncMap{
	"short":  shortName,
	"ranges": func() []string { return []string{"1h", "24h", "7d"} },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"exit": func(p *int) string {
		if p == nil {
			return ""
		}
		return fmt.Sprint(*p)
	},
	"count": func(n int) string {
		if n >= jobsCounted {
			return fmt.Sprintf("%d+", jobsCounted)
		}
		return fmt.Sprint(n)
	},
	"pct": func(a, b int) int {
		if b <= 0 {
			return 0
		}
		return 100 * a / b
	},
	"digest": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	// link makes a column value of the jobs table point at its page.
	"joblink": func(col, val string) string {
		switch col {
		case "node_name":
			return "/slivers?node=" + url.QueryEscape(val)
		case "sliver_urn":
			return "/sliver?urn=" + url.QueryEscape(val)
		case "state":
			return "/jobs?state=" + url.QueryEscape(val)
		}
		return ""
	},
}
