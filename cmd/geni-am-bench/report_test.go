package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sampleReport() *report {
	return &report{
		AM: "https://127.0.0.1:8001/?a=1&b=<2>", Started: time.Date(2026, 11, 21, 22, 0, 0, 0, time.UTC), Duration: "10s", Count: 100,
		Results: []result{
			{Scenario: "getversion", Clients: 1, Calls: 100, CallsPerSec: 250.5, P50ms: 3.6, P95ms: 4.4, P99ms: 6.1},
			{Scenario: "allocate", Clients: 8, Calls: 50, CallsPerSec: 7.4, P50ms: 65, P95ms: 82.7, P99ms: 90, Errors: 2,
				ErrorsBy: map[string]int{"Allocate BUSY(14)": 2}, Note: "asked for 32 <clients> & got 8"},
			{Scenario: "provision", Clients: 1, Skipped: "slivers never left geni_notready"},
			{Scenario: "odd <name> & \"quotes\"", Clients: 3, Calls: 1, CallsPerSec: math.NaN(), P95ms: 0},
			{Scenario: "allocate+delete", Clients: 8, Calls: 50, CallsPerSec: 7.4, P50ms: 120, P95ms: 140, P99ms: 150},
		},
		PgBench: &pgbenchResult{Clients: 8, Threads: 2, Seconds: 10, TPS: 740},
	}
}

func TestSVGIsValidXML(t *testing.T) {
	for name, r := range map[string]*report{"sample": sampleReport(), "empty": {AM: "x"}} {
		svg := renderSVG(r)
		d := xml.NewDecoder(bytes.NewReader(svg))
		d.Strict = true
		var rects, texts int
		depth := 0
		var root xml.StartElement
		for {
			tok, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: not well-formed XML: %v\n%s", name, err, svg)
			}
			switch el := tok.(type) {
			case xml.StartElement:
				if depth == 0 {
					root = el
				}
				depth++
				switch el.Name.Local {
				case "rect":
					rects++
					for _, a := range el.Attr {
						if a.Name.Local == "height" || a.Name.Local == "width" || a.Name.Local == "y" {
							if n, err := strconv.Atoi(a.Value); err != nil || n < 0 {
								t.Errorf("%s: rect %s=%q", name, a.Name.Local, a.Value)
							}
						}
					}
				case "text":
					texts++
				}
			case xml.EndElement:
				depth--
			}
		}
		if root.Name.Space != "http://www.w3.org/2000/svg" || root.Name.Local != "svg" {
			t.Errorf("%s: root element %v, want svg in the SVG namespace", name, root.Name)
		}
		// Background, two legend boxes, then two bars per measured row.
		measured := 0
		for _, res := range r.Results {
			if res.Skipped == "" {
				measured++
			}
		}
		if want := 3 + 2*measured; rects != want {
			t.Errorf("%s: %d rects, want %d", name, rects, want)
		}
		if texts == 0 {
			t.Errorf("%s: no text", name)
		}
		if name == "sample" && !strings.Contains(string(svg), "odd &lt;name&gt; &amp;") {
			t.Errorf("scenario names are not escaped")
		}
	}
}

func TestNiceCeil(t *testing.T) {
	cases := map[float64]float64{0: 1, -3: 1, 0.3: 0.5, 1: 1, 1.1: 2, 3: 5, 7.4: 10, 250.5: 500, 1000: 1000, 1001: 2000, math.NaN(): 1, math.Inf(1): 1}
	for in, want := range cases {
		if got := niceCeil(in); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

func TestAxis(t *testing.T) {
	lin := newAxis([]float64{2, 7.4, 0})
	if lin.log || lin.hi != 10 || lin.height(5) != svgPlotHeight/2 || lin.height(20) != svgPlotHeight || lin.height(math.NaN()) != 0 || lin.height(-1) != 0 {
		t.Errorf("linear axis %+v", lin)
	}
	if ticks := lin.ticks(); len(ticks) != 5 || ticks[4] != 10 {
		t.Errorf("linear ticks %v", ticks)
	}
	lg := newAxis([]float64{0.7, 130, 5000, 0})
	if !lg.log || lg.lo != 0.1 || lg.hi != 10000 {
		t.Fatalf("log axis %+v", lg)
	}
	if lg.height(0.1) != 0 || lg.height(10000) != svgPlotHeight || lg.height(10) != svgPlotHeight*2/5 || lg.height(0.01) != 0 {
		t.Errorf("log heights %d %d %d", lg.height(0.1), lg.height(10000), lg.height(10))
	}
	if ticks := lg.ticks(); len(ticks) != 6 || ticks[0] != 0.1 || math.Abs(ticks[5]-10000) > 1e-6 {
		t.Errorf("log ticks %v", ticks)
	}
	if empty := newAxis(nil); empty.log || empty.hi != 1 || empty.height(0) != 0 {
		t.Errorf("empty axis %+v", empty)
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := writeTable(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	// The five table lines are right-aligned to the same width.
	for i := 1; i < 5; i++ {
		if len(lines[i]) != len(lines[0]) {
			t.Errorf("line %d is %d wide, header %d:\n%s", i, len(lines[i]), len(lines[0]), out)
		}
	}
	for _, want := range []string{
		"getversion                   1    100    250.5    3.60    4.40    6.10       0",
		"errors allocate (clients 8): 2× Allocate BUSY(14)",
		"note allocate (clients 8): asked for 32",
		"skipped provision (clients 1): slivers never left geni_notready",
		"740.0 tps",
		"allocate with 8 clients: 7.4 calls/s = 1.0% of pgbench tps",
		"allocate+delete with 8 clients: 7.4 pairs/s (p99 150.00 ms) = 2.0% of pgbench tps/2 (370.0)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// With pgbench run before and after the scenarios, they are compared with
// the mean of the two.
func TestPgBenchBeforeAndAfter(t *testing.T) {
	r := &report{Results: []result{{Scenario: rowAllocateDelete, Clients: 8, Calls: 10, CallsPerSec: 300, P99ms: 20},
		{Scenario: rowGetVersionPair, Clients: 8, Calls: 10, CallsPerSec: 600, P99ms: 2}},
		PgBench: &pgbenchResult{Clients: 8, Threads: 2, Seconds: 10, TPS: 1000, TPSBefore: 2000}}
	var b bytes.Buffer
	if err := writeTable(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2000.0 tps before the scenarios, 1000.0 after; their mean 1500.0 tps",
		"allocate+delete with 8 clients: 300.0 pairs/s (p99 20.00 ms) = 40.0% of pgbench tps/2 (750.0)",
		"getversion+getversion with 8 clients: 600.0 pairs/s = 80.0% of pgbench tps/2, the most any pair of calls reaches (no database work)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
