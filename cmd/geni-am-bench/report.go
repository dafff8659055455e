package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything one run measured; --json writes it as it is.
type report struct {
	AM       string         `json:"am"`
	Started  time.Time      `json:"started"`
	Duration string         `json:"duration_per_scenario"`
	Count    int            `json:"count_per_scenario"`
	Settings map[string]any `json:"settings"`
	Results  []result       `json:"results"`
	PgBench  *pgbenchResult `json:"pgbench,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
}

// writeTable prints the aligned table, then error breakdowns and notes.
func writeTable(w io.Writer, r *report) error {
	// Numbers are right-aligned; the scenario names are padded to one width
	// first, so they stay left-aligned in a right-aligned column.
	nameWidth := len("scenario")
	for _, res := range r.Results {
		nameWidth = max(nameWidth, len(res.Scenario))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tclients\tcalls\tcalls/s\tp50 ms\tp95 ms\tp99 ms\terrors\t\n", nameWidth, "scenario")
	for _, res := range r.Results {
		if res.Skipped != "" {
			fmt.Fprintf(tw, "%-*s\t%d\t-\t-\t-\t-\t-\t-\t\n", nameWidth, res.Scenario, res.Clients)
			continue
		}
		fmt.Fprintf(tw, "%-*s\t%d\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%d\t\n", nameWidth, res.Scenario, res.Clients, res.Calls,
			res.CallsPerSec, res.P50ms, res.P95ms, res.P99ms, res.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	lastNote, lastSkip := "", ""
	for _, res := range r.Results {
		label := fmt.Sprintf("%s (clients %d)", res.Scenario, res.Clients)
		if res.Skipped != "" {
			if res.Skipped != lastSkip { // rows of one scenario share the reason
				fmt.Fprintf(&b, "skipped %s: %s\n", label, res.Skipped)
			}
			lastSkip = res.Skipped
			continue
		}
		lastSkip = ""
		if len(res.ErrorsBy) > 0 {
			fmt.Fprintf(&b, "errors %s: %s\n", label, formatCounts(res.ErrorsBy))
		}
		if res.Note != "" && res.Note != lastNote { // rows of one scenario share their note
			fmt.Fprintf(&b, "note %s: %s\n", label, res.Note)
		}
		lastNote = res.Note
	}
	if r.PgBench != nil {
		p := r.PgBench
		fmt.Fprintf(&b, "pgbench -N -c %d -j %d -T %d: %.1f tps (the database's ceiling for small write transactions)\n",
			p.Clients, p.Threads, p.Seconds, p.TPS)
		for _, res := range r.Results {
			if res.Scenario == rowAllocate && res.Skipped == "" && p.TPS > 0 {
				fmt.Fprintf(&b, "  allocate with %d clients: %.1f calls/s = %.1f%% of pgbench tps\n",
					res.Clients, res.CallsPerSec, 100*res.CallsPerSec/p.TPS)
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d× %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

func writeJSON(name string, r *report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}

// SVG geometry, in pixels.
const (
	svgGroupWidth = 64
	svgBarWidth   = 22
	svgPlotHeight = 260
	svgTop        = 60
	svgLeft       = 80
	svgRight      = 80
	svgLabelSpace = 150
	colorRate     = "#3b6fb6"
	colorP95      = "#e08a2c"
)

// renderSVG draws calls/s (left axis) and p95 latency (right axis) as two
// bars per measured row. Written by hand: a few rects, lines and texts.
func renderSVG(r *report) []byte {
	var rows []result
	for _, res := range r.Results {
		if res.Skipped == "" {
			rows = append(rows, res)
		}
	}
	maxRate, maxP95 := 0.0, 0.0
	for _, res := range rows {
		maxRate = math.Max(maxRate, res.CallsPerSec)
		maxP95 = math.Max(maxP95, res.P95ms)
	}
	rateTop, p95Top := niceCeil(maxRate), niceCeil(maxP95)
	width := svgLeft + svgRight + max(len(rows), 4)*svgGroupWidth
	height := svgTop + svgPlotHeight + svgLabelSpace
	base := svgTop + svgPlotHeight
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", svgLeft, esc("geni-am-bench: "+r.AM))
	fmt.Fprintf(&b, `<text x="%d" y="38">%s</text>`+"\n", svgLeft, esc(r.Started.UTC().Format(time.RFC3339)+", up to "+r.Duration+" or "+fmt.Sprint(r.Count)+" calls per scenario"))
	// Legend.
	lx := width - svgRight - 190
	fmt.Fprintf(&b, `<rect x="%d" y="10" width="12" height="12" fill="%s"/><text x="%d" y="20">calls/s (left axis)</text>`+"\n", lx, colorRate, lx+16)
	fmt.Fprintf(&b, `<rect x="%d" y="28" width="12" height="12" fill="%s"/><text x="%d" y="38">p95 ms (right axis)</text>`+"\n", lx, colorP95, lx+16)
	// Axes with five ticks each.
	right := width - svgRight
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", svgLeft, svgTop, svgLeft, base)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", right, svgTop, right, base)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", svgLeft, base, right, base)
	for i := 0; i <= 4; i++ {
		y := base - i*svgPlotHeight/4
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", svgLeft+1, y, right-1, y)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="%s">%s</text>`+"\n", svgLeft-6, y+4, colorRate, esc(axisLabel(rateTop*float64(i)/4)))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", right+6, y+4, colorP95, esc(axisLabel(p95Top*float64(i)/4)))
	}
	for i, res := range rows {
		gx := svgLeft + i*svgGroupWidth + (svgGroupWidth-2*svgBarWidth)/2
		hr := scaled(res.CallsPerSec, rateTop)
		hp := scaled(res.P95ms, p95Top)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			gx, base-hr, svgBarWidth, hr, colorRate, esc(fmt.Sprintf("%s, %d clients: %.1f calls/s", res.Scenario, res.Clients, res.CallsPerSec)))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			gx+svgBarWidth, base-hp, svgBarWidth, hp, colorP95, esc(fmt.Sprintf("%s, %d clients: p95 %.2f ms", res.Scenario, res.Clients, res.P95ms)))
		lx, ly := gx+svgBarWidth, base+14
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" transform="rotate(-45 %d %d)">%s</text>`+"\n",
			lx, ly, lx, ly, esc(fmt.Sprintf("%s ×%d", res.Scenario, res.Clients)))
	}
	if len(rows) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no scenario was measured</text>`+"\n", svgLeft+10, base-20)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// scaled is v's bar height on an axis whose top is top.
func scaled(v, top float64) int {
	if top <= 0 || v <= 0 || math.IsNaN(v) {
		return 0
	}
	return int(math.Round(math.Min(v/top, 1) * svgPlotHeight))
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten, so ticks are round.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func axisLabel(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
