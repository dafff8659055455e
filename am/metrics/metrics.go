// Package metrics exposes counters, gauges and histograms in the Prometheus
// text format (version 0.0.4). It is the fifty lines of standard library that
// spare the aggregate a client library: label values are kept in a map, and
// the exposition is written on demand by an http.Handler.
package metrics

import (
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Registry holds metrics and writes them out.
type Registry struct {
	mu      sync.Mutex
	metrics []metric
}

type metric interface {
	name() string
	write(w io.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) add(m metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics = append(r.metrics, m)
	sort.Slice(r.metrics, func(i, j int) bool { return r.metrics[i].name() < r.metrics[j].name() })
}

// ServeHTTP writes every metric.
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	r.Expose(w)
}

// Expose writes the exposition to w.
func (r *Registry) Expose(w io.Writer) {
	r.mu.Lock()
	ms := append([]metric(nil), r.metrics...)
	r.mu.Unlock()
	for _, m := range ms {
		m.write(w)
	}
}

// Counter is a monotonically increasing value per label set.
type Counter struct{ vec }

// NewCounter registers a counter with the given label names.
func (r *Registry) NewCounter(name, help string, labels ...string) *Counter {
	c := &Counter{vec{n: name, help: help, typ: "counter", labels: labels, values: map[string]float64{}}}
	r.add(c)
	return c
}

// Add adds d (>= 0) to the counter of the label values.
func (c *Counter) Add(d float64, labelValues ...string) { c.add(d, labelValues) }

// Inc adds one.
func (c *Counter) Inc(labelValues ...string) { c.add(1, labelValues) }

// Gauge is a value that goes up and down, or is read from a function.
type Gauge struct {
	vec
	fn func() float64
}

// NewGauge registers a gauge.
func (r *Registry) NewGauge(name, help string, labels ...string) *Gauge {
	g := &Gauge{vec: vec{n: name, help: help, typ: "gauge", labels: labels, values: map[string]float64{}}}
	r.add(g)
	return g
}

// NewGaugeFunc registers a gauge whose value is read at scrape time.
func (r *Registry) NewGaugeFunc(name, help string, fn func() float64) {
	g := &Gauge{vec: vec{n: name, help: help, typ: "gauge", values: map[string]float64{}}, fn: fn}
	r.add(g)
}

// Set sets the gauge of the label values.
func (g *Gauge) Set(v float64, labelValues ...string) {
	g.mu.Lock()
	g.values[key(labelValues)] = v
	g.mu.Unlock()
}

func (g *Gauge) write(w io.Writer) {
	if g.fn != nil {
		g.mu.Lock()
		g.values[""] = g.fn()
		g.mu.Unlock()
	}
	g.vec.write(w)
}

type vec struct {
	mu     sync.Mutex
	n      string
	help   string
	typ    string
	labels []string
	values map[string]float64
}

func (v *vec) name() string { return v.n }

func (v *vec) add(d float64, lv []string) {
	v.mu.Lock()
	v.values[key(lv)] += d
	v.mu.Unlock()
}

// Value returns the current value for the label values (tests).
func (v *vec) Value(labelValues ...string) float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.values[key(labelValues)]
}

func (v *vec) write(w io.Writer) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", v.n, escapeHelp(v.help), v.n, v.typ)
	for _, k := range slices.Sorted(maps.Keys(v.values)) {
		fmt.Fprintf(w, "%s%s %s\n", v.n, labelString(v.labels, k, "", ""), formatFloat(v.values[k]))
	}
}

// Histogram counts observations in cumulative buckets.
type Histogram struct {
	mu      sync.Mutex
	n       string
	help    string
	labels  []string
	buckets []float64
	series  map[string]*hseries
}

type hseries struct {
	counts []uint64
	sum    float64
	count  uint64
}

// DefaultLatencyBuckets suit AM API calls, in seconds.
var DefaultLatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// NewHistogram registers a histogram with upper bounds buckets (ascending).
func (r *Registry) NewHistogram(name, help string, buckets []float64, labels ...string) *Histogram {
	h := &Histogram{n: name, help: help, labels: labels, buckets: buckets, series: map[string]*hseries{}}
	r.add(h)
	return h
}

func (h *Histogram) name() string { return h.n }

// Observe records v for the label values.
func (h *Histogram) Observe(v float64, labelValues ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := key(labelValues)
	s := h.series[k]
	if s == nil {
		s = &hseries{counts: make([]uint64, len(h.buckets))}
		h.series[k] = s
	}
	for i, b := range h.buckets {
		if v <= b {
			s.counts[i]++
		}
	}
	s.sum += v
	s.count++
}

func (h *Histogram) write(w io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", h.n, escapeHelp(h.help), h.n)
	for _, k := range slices.Sorted(maps.Keys(h.series)) {
		s := h.series[k]
		for i, b := range h.buckets {
			fmt.Fprintf(w, "%s_bucket%s %d\n", h.n, labelString(h.labels, k, "le", formatFloat(b)), s.counts[i])
		}
		fmt.Fprintf(w, "%s_bucket%s %d\n", h.n, labelString(h.labels, k, "le", "+Inf"), s.count)
		fmt.Fprintf(w, "%s_sum%s %s\n", h.n, labelString(h.labels, k, "", ""), formatFloat(s.sum))
		fmt.Fprintf(w, "%s_count%s %d\n", h.n, labelString(h.labels, k, "", ""), s.count)
	}
}

// key joins label values with a separator that cannot appear in them after escaping.
func key(lv []string) string { return strings.Join(lv, "\x00") }

func labelString(names []string, k, extraName, extraValue string) string {
	var parts []string
	if len(names) > 0 {
		vals := strings.Split(k, "\x00")
		for i, n := range names {
			v := ""
			if i < len(vals) {
				v = vals[i]
			}
			parts = append(parts, n+`="`+escapeLabel(v)+`"`)
		}
	}
	if extraName != "" {
		parts = append(parts, extraName+`="`+extraValue+`"`)
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
