package main

import (
	"math"
	"sort"
	"sync"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted samples by
// the nearest-rank method: the smallest sample with at least p% of the
// samples at or below it. It is always one of the measured values, never an
// interpolation. Zero for no samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// recorder collects the calls of one table row from many clients.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	errors    map[string]int
	failed    int
}

func newRecorder() *recorder { return &recorder{errors: map[string]int{}} }

// add records one call: its latency and, when it failed, why.
func (r *recorder) add(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, d)
	if err != nil {
		r.failed++
		r.errors[errorKey(err)]++
	}
}

// addError counts a failure that has no latency of its own in this row (a
// step of a compound operation).
func (r *recorder) addError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[errorKey(err)]++
}

// result is one row of the report.
type result struct {
	Scenario    string         `json:"scenario"`
	Clients     int            `json:"clients"`
	Calls       int            `json:"calls"`
	Seconds     float64        `json:"seconds"`
	CallsPerSec float64        `json:"calls_per_sec"`
	P50ms       float64        `json:"p50_ms"`
	P95ms       float64        `json:"p95_ms"`
	P99ms       float64        `json:"p99_ms"`
	MinMs       float64        `json:"min_ms"`
	MaxMs       float64        `json:"max_ms"`
	MeanMs      float64        `json:"mean_ms"`
	Errors      int            `json:"errors"`
	ErrorsBy    map[string]int `json:"errors_by,omitempty"` // "Method LABEL(code)" or "Method non-GENI kind"
	Handshakes  int64          `json:"tls_handshakes,omitempty"`
	Skipped     string         `json:"skipped,omitempty"`
	Note        string         `json:"note,omitempty"`
}

// result summarises the recorder over elapsed wall time.
func (r *recorder) result(scenario string, clients int, elapsed time.Duration) result {
	r.mu.Lock()
	defer r.mu.Unlock()
	sorted := append([]time.Duration(nil), r.latencies...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	res := result{Scenario: scenario, Clients: clients, Calls: len(sorted), Seconds: elapsed.Seconds(), Errors: r.failed}
	if len(r.errors) > 0 {
		res.ErrorsBy = make(map[string]int, len(r.errors))
		for k, v := range r.errors {
			res.ErrorsBy[k] = v
		}
	}
	if elapsed > 0 {
		res.CallsPerSec = float64(len(sorted)) / elapsed.Seconds()
	}
	if len(sorted) > 0 {
		var sum time.Duration
		for _, d := range sorted {
			sum += d
		}
		res.P50ms = ms(percentile(sorted, 50))
		res.P95ms = ms(percentile(sorted, 95))
		res.P99ms = ms(percentile(sorted, 99))
		res.MinMs = ms(sorted[0])
		res.MaxMs = ms(sorted[len(sorted)-1])
		res.MeanMs = ms(sum / time.Duration(len(sorted)))
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
