package metrics

// NewCounterFunc registers a counter whose value is read at scrape time from
// a monotonically increasing source (e.g. a pool's or a cache's own count).
func (r *Registry) NewCounterFunc(name, help string, fn func() float64) {
	g := &Gauge{vec: vec{n: name, help: help, typ: "counter", values: map[string]float64{}}, fn: fn}
	r.add(g)
}
