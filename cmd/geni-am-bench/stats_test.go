package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	cases := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{7}, 99, 7},
		{"one sample p50", []time.Duration{7}, 50, 7},
		{"median of ten", ten, 50, 5},
		{"p95 of ten", ten, 95, 10},
		{"p90 of ten", ten, 90, 9},
		{"p99 of ten", ten, 99, 10},
		{"p100", ten, 100, 10},
		{"p0 is the minimum", ten, 0, 1},
		{"p above 100 is the maximum", ten, 150, 10},
		{"p50 of a hundred", hundred, 50, 50},
		{"p95 of a hundred", hundred, 95, 95},
		{"p99 of a hundred", hundred, 99, 99},
		{"p99.9 of a hundred", hundred, 99.9, 100},
		{"p1 of a hundred", hundred, 1, 1},
		{"two samples p50", []time.Duration{3, 9}, 50, 3},
		{"two samples p51", []time.Duration{3, 9}, 51, 9},
	}
	for _, c := range cases {
		if got := percentile(c.samples, c.p); got != c.want {
			t.Errorf("%s: percentile(%v) = %v, want %v", c.name, c.p, got, c.want)
		}
	}
}

// The nearest-rank percentile is a measured value with at least p% of the
// samples at or below it and fewer than p% strictly below it.
func TestPercentileProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		n := 1 + r.IntN(500)
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(r.IntN(50))
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		for _, p := range []float64{1, 50, 95, 99, 100} {
			v := percentile(s, p)
			atOrBelow, below := 0, 0
			for _, x := range s {
				if x <= v {
					atOrBelow++
				}
				if x < v {
					below++
				}
			}
			if float64(atOrBelow) < p/100*float64(n) || float64(below) >= p/100*float64(n) {
				t.Fatalf("n=%d p=%v: %v has %d at or below, %d below", n, p, v, atOrBelow, below)
			}
		}
	}
}

func TestRecorderResult(t *testing.T) {
	r := newRecorder()
	for i := 1; i <= 100; i++ { // recorded out of order, as concurrent clients do
		d := time.Duration(101-i) * time.Millisecond
		var err error
		switch {
		case i%25 == 0:
			err = &callError{Method: "Allocate", Kind: kindGENI, Code: 14}
		case i == 1:
			err = &callError{Method: "Allocate", Kind: kindTransport, Msg: "reset"}
		}
		r.add(d, err)
	}
	r.addError(errors.New("cleanup failed"))
	res := r.result("allocate", 8, 2*time.Second)
	want := map[string]int{"Allocate BUSY(14)": 4, "Allocate non-GENI transport": 1, "cleanup failed": 1}
	if res.Calls != 100 || res.Errors != 5 || res.Clients != 8 || res.CallsPerSec != 50 {
		t.Errorf("result %+v", res)
	}
	for k, v := range want {
		if res.ErrorsBy[k] != v {
			t.Errorf("ErrorsBy[%q] = %d, want %d (all: %v)", k, res.ErrorsBy[k], v, res.ErrorsBy)
		}
	}
	if res.P50ms != 50 || res.P95ms != 95 || res.P99ms != 99 || res.MinMs != 1 || res.MaxMs != 100 || res.MeanMs != 50.5 {
		t.Errorf("latencies %+v", res)
	}
	if empty := newRecorder().result("x", 1, 0); empty.Calls != 0 || empty.CallsPerSec != 0 || empty.P99ms != 0 {
		t.Errorf("empty result %+v", empty)
	}
}

func TestCallErrorLabels(t *testing.T) {
	cases := []struct {
		err  *callError
		want string
	}{
		{&callError{Method: "Delete", Kind: kindGENI, Code: 12}, "Delete SEARCHFAILED(12)"},
		{&callError{Method: "Delete", Kind: kindGENI, Code: 99}, "Delete geni_code 99"},
		{&callError{Method: "GetVersion", Kind: kindFault, Code: -32601}, "GetVersion non-GENI fault -32601"},
		{&callError{Method: "GetVersion", Kind: kindHTTP, Code: 503}, "GetVersion non-GENI http 503"},
		{&callError{Method: "Status", Kind: kindMalformed}, "Status non-GENI malformed"},
	}
	for _, c := range cases {
		if got := errorKey(c.err); got != c.want {
			t.Errorf("errorKey = %q, want %q", got, c.want)
		}
	}
}

func TestGeniValue(t *testing.T) {
	ok := map[string]any{"code": map[string]any{"geni_code": int64(0)}, "value": "v", "output": ""}
	if v, err := geniValue("M", ok); err != nil || v != "v" {
		t.Errorf("success: %v %v", v, err)
	}
	cases := []struct {
		in   any
		kind string
		code int
	}{
		{map[string]any{"code": map[string]any{"geni_code": int64(2)}, "output": "bad"}, kindGENI, 2},
		{map[string]any{"code": map[string]any{"geni_code": "0"}}, kindMalformed, 0},
		{map[string]any{"value": "v"}, kindMalformed, 0},
		{"just a string", kindMalformed, 0},
		{nil, kindMalformed, 0},
	}
	for _, c := range cases {
		_, err := geniValue("M", c.in)
		var ce *callError
		if !errors.As(err, &ce) || ce.Kind != c.kind || ce.Code != c.code {
			t.Errorf("geniValue(%#v) = %v, want kind %s code %d", c.in, err, c.kind, c.code)
		}
	}
}

func TestBudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bg := newBudget(ctx, 3, time.Hour)
	time.Sleep(5 * time.Millisecond) // connecting does not count against the duration
	bg.begin()
	n := 0
	for bg.take() {
		n++
	}
	if n != 3 {
		t.Errorf("count 3 allowed %d iterations", n)
	}
	bg = newBudget(ctx, 1000, 20*time.Millisecond)
	bg.begin()
	start := time.Now()
	for bg.take() {
		time.Sleep(time.Millisecond)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 2*time.Second {
		t.Errorf("duration 20ms stopped after %v", d)
	}
	bg = newBudget(ctx, 1000, time.Hour)
	bg.begin()
	cancel()
	if bg.take() {
		t.Error("a cancelled context still allowed a call")
	}
}
