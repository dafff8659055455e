package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
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
	Baseline *report        `json:"-"` // --baseline: an earlier run to compare p99s with
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
		if p.TPSBefore > 0 {
			fmt.Fprintf(&b, "pgbench -N -c %d -j %d -T %d: %.1f tps before the scenarios, %.1f after; their mean %.1f tps is the database's ceiling for small write transactions\n",
				p.Clients, p.Threads, p.Seconds, p.TPSBefore, p.TPS, p.ceiling())
		} else {
			fmt.Fprintf(&b, "pgbench -N -c %d -j %d -T %d: %.1f tps (the database's ceiling for small write transactions)\n",
				p.Clients, p.Threads, p.Seconds, p.TPS)
		}
		tps := p.ceiling()
		for _, res := range r.Results {
			if res.Scenario == rowAllocate && res.Skipped == "" && tps > 0 {
				fmt.Fprintf(&b, "  allocate with %d clients: %.1f calls/s = %.1f%% of pgbench tps\n",
					res.Clients, res.CallsPerSec, 100*res.CallsPerSec/tps)
			}
			// Two calls with no database work: what no pair of calls from
			// this client exceeds on this machine.
			if res.Scenario == rowGetVersionPair && res.Skipped == "" && tps > 0 {
				fmt.Fprintf(&b, "  getversion+getversion with %d clients: %.1f pairs/s = %.1f%% of pgbench tps/2, the most any pair of calls reaches (no database work)\n",
					res.Clients, res.CallsPerSec, 200*res.CallsPerSec/tps)
			}
			// A pair is two small write transactions: its ceiling is tps/2.
			if res.Scenario == rowAllocateDelete && res.Skipped == "" && tps > 0 {
				fmt.Fprintf(&b, "  allocate+delete with %d clients: %.1f pairs/s (p99 %.2f ms) = %.1f%% of pgbench tps/2 (%.1f)\n",
					res.Clients, res.CallsPerSec, res.P99ms, 200*res.CallsPerSec/tps, tps/2)
			}
		}
	}
	if r.Baseline != nil {
		for _, res := range r.Results {
			for _, old := range r.Baseline.Results {
				if old.Scenario == res.Scenario && old.Clients == res.Clients && res.Skipped == "" && old.Skipped == "" && old.P99ms > 0 {
					fmt.Fprintf(&b, "  %s with %d clients: p99 %.2f ms = %.2fx the baseline's %.2f ms\n",
						res.Scenario, res.Clients, res.P99ms, res.P99ms/old.P99ms, old.P99ms)
				}
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
	keys := slices.Sorted(maps.Keys(m))
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
	var rates, p95s []float64
	for _, res := range r.Results {
		if res.Skipped == "" {
			rows = append(rows, res)
			rates = append(rates, res.CallsPerSec)
			p95s = append(p95s, res.P95ms)
		}
	}
	rateAxis, p95Axis := newAxis(rates), newAxis(p95s)
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
	lx := width - svgRight - 220
	fmt.Fprintf(&b, `<rect x="%d" y="10" width="12" height="12" fill="%s"/><text x="%d" y="20">%s</text>`+"\n", lx, colorRate, lx+16, esc("calls/s (left axis"+rateAxis.kind()+")"))
	fmt.Fprintf(&b, `<rect x="%d" y="28" width="12" height="12" fill="%s"/><text x="%d" y="38">%s</text>`+"\n", lx, colorP95, lx+16, esc("p95 ms (right axis"+p95Axis.kind()+")"))
	right := width - svgRight
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", svgLeft, svgTop, svgLeft, base)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", right, svgTop, right, base)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", svgLeft, base, right, base)
	for _, v := range rateAxis.ticks() {
		y := base - rateAxis.height(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", svgLeft+1, y, right-1, y)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="%s">%s</text>`+"\n", svgLeft-6, y+4, colorRate, esc(axisLabel(v)))
	}
	for _, v := range p95Axis.ticks() {
		y := base - p95Axis.height(v)
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", right+6, y+4, colorP95, esc(axisLabel(v)))
	}
	for i, res := range rows {
		gx := svgLeft + i*svgGroupWidth + (svgGroupWidth-2*svgBarWidth)/2
		hr := rateAxis.height(res.CallsPerSec)
		hp := p95Axis.height(res.P95ms)
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

// axis maps values to bar heights: linear from 0 to a round top, or, when
// the values span more than two decades (1 call/s next to 5,000), by powers
// of ten, so that no bar shrinks to nothing beside the largest.
type axis struct {
	log    bool
	lo, hi float64 // the hi of a linear axis; decades lo..hi of a log axis
}

func newAxis(values []float64) axis {
	minPos, maxV := math.Inf(1), 0.0
	for _, v := range values {
		if v > 0 && !math.IsInf(v, 0) {
			minPos = math.Min(minPos, v)
			maxV = math.Max(maxV, v)
		}
	}
	if maxV == 0 || maxV/minPos <= 100 {
		return axis{hi: niceCeil(maxV)}
	}
	return axis{log: true, lo: math.Pow(10, math.Floor(math.Log10(minPos))), hi: math.Pow(10, math.Ceil(math.Log10(maxV)))}
}

func (a axis) kind() string {
	if a.log {
		return ", log scale"
	}
	return ""
}

// height is v's bar height in pixels, 0..svgPlotHeight.
func (a axis) height(v float64) int {
	if v <= 0 || math.IsNaN(v) || a.hi <= 0 {
		return 0
	}
	f := v / a.hi
	if a.log {
		f = math.Log10(v/a.lo) / math.Log10(a.hi/a.lo)
	}
	return int(math.Round(math.Max(0, math.Min(f, 1)) * svgPlotHeight))
}

// ticks are five even steps of a linear axis, or the powers of ten of a log one.
func (a axis) ticks() []float64 {
	var out []float64
	if !a.log {
		for i := 0; i <= 4; i++ {
			out = append(out, a.hi*float64(i)/4)
		}
		return out
	}
	for v := a.lo; v <= a.hi*1.001; v *= 10 {
		out = append(out, v)
	}
	return out
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

// readBaseline reads a --json file written by an earlier run.
func readBaseline(name string) (*report, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--baseline: %w", err)
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("--baseline %s: %w", name, err)
	}
	return &r, nil
}
