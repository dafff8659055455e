package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	calls := r.NewCounter("geniam_calls_total", "AM API calls by method and geni_code.", "method", "geni_code")
	calls.Inc("Allocate", "0")
	calls.Inc("Allocate", "0")
	calls.Inc("Delete", "12")
	lat := r.NewHistogram("geniam_call_seconds", "Call latency.", []float64{0.01, 0.1}, "method")
	lat.Observe(0.005, "Allocate")
	lat.Observe(0.05, "Allocate")
	r.NewGaugeFunc("geniam_queue_depth", "Jobs waiting.", func() float64 { return 3 })
	g := r.NewGauge("geniam_agent_up", "1 when the node's agent answers.", "node")
	g.Set(1, `node"1`)

	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := string(body)
	for _, want := range []string{
		"# TYPE geniam_calls_total counter",
		`geniam_calls_total{method="Allocate",geni_code="0"} 2`,
		`geniam_calls_total{method="Delete",geni_code="12"} 1`,
		`geniam_call_seconds_bucket{method="Allocate",le="0.01"} 1`,
		`geniam_call_seconds_bucket{method="Allocate",le="+Inf"} 2`,
		`geniam_call_seconds_count{method="Allocate"} 2`,
		"geniam_queue_depth 3",
		`geniam_agent_up{node="node\"1"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	if calls.Value("Allocate", "0") != 2 {
		t.Errorf("Value = %v", calls.Value("Allocate", "0"))
	}
}

func TestCounterFunc(t *testing.T) {
	r := NewRegistry()
	n := 0.0
	r.NewCounterFunc("x_total", "things", func() float64 { n++; return n })
	var b strings.Builder
	r.Expose(&b)
	if want := "# HELP x_total things\n# TYPE x_total counter\nx_total 1\n"; b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
}
