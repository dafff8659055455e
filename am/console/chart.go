package console

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"strings"
	"time"

	"github.com/geniam/geniam/store"
)

// usageSVG is GET /usage.svg?range=1h|24h|7d: live slivers and nodes in use
// over time, drawn here as SVG (no chart library to vendor). Operators only:
// it counts every slice.
func (c *Console) usageSVG(w http.ResponseWriter, r *http.Request) {
	v, err := c.viewerOf(r)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if v == nil || !v.Operator {
		http.Error(w, forbidden.Msg, http.StatusForbidden)
		return
	}
	pts, err := c.usage(r.Context(), rangeOf(r))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(usageChart(pts, rangeOf(r))))
}

// usedChart is the last usage read for one range.
type usedChart struct {
	mark string // the store's change mark when it was read
	at   time.Time
	pts  []store.UsagePoint
}

// usage reads the points of a range, or reuses the last reading while the
// store's change mark has not moved and the window has not slid by a step:
// every open overview asks for the chart after each change, and the query
// reads all of sliver_history.
func (c *Console) usage(ctx context.Context, rng string) ([]store.UsagePoint, error) {
	span := ranges[rng]
	mark, err := c.cfg.Source.ChangeMark(ctx)
	if err != nil {
		return nil, err
	}
	c.chartMu.Lock()
	last, ok := c.charts[rng]
	c.chartMu.Unlock()
	if ok && last.mark == mark && time.Since(last.at) < span[1] {
		return last.pts, nil
	}
	pts, err := c.cfg.Source.Usage(ctx, time.Now().Add(-span[0]), span[1])
	if err != nil {
		return nil, err
	}
	c.chartMu.Lock()
	c.charts[rng] = usedChart{mark: mark, at: time.Now(), pts: pts}
	c.chartMu.Unlock()
	return pts, nil
}

// usageChart draws two step lines on one axis.
func usageChart(pts []store.UsagePoint, label string) string {
	const W, H, left, right, top, bottom = 720, 220, 40, 10, 20, 30
	max := 1
	for _, p := range pts {
		if p.Slivers > max {
			max = p.Slivers
		}
		if p.Nodes > max {
			max = p.Nodes
		}
	}
	x := func(i int) float64 {
		if len(pts) < 2 {
			return left
		}
		return left + float64(i)*float64(W-left-right)/float64(len(pts)-1)
	}
	y := func(n int) float64 { return top + float64(H-top-bottom)*(1-float64(n)/float64(max)) }
	line := func(val func(store.UsagePoint) int) string {
		var b strings.Builder
		for i, p := range pts {
			if i > 0 {
				fmt.Fprintf(&b, "%.1f,%.1f ", x(i), y(val(pts[i-1])))
			}
			fmt.Fprintf(&b, "%.1f,%.1f ", x(i), y(val(p)))
		}
		return b.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" font-family="sans-serif" font-size="11">`, W, H, W, H)
	fmt.Fprintf(&b, `<title>slivers and nodes in use, last %s</title><rect width="100%%" height="100%%" fill="#fff"/>`, html.EscapeString(label))
	for _, n := range []int{0, max / 2, max} {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%d</text>`,
			left, W-right, y(n), y(n), left-4, y(n)+4, n)
	}
	if len(pts) > 0 {
		first, last := pts[0].At, pts[len(pts)-1].At
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text><text x="%d" y="%d" text-anchor="end">%s UTC</text>`,
			left, H-8, first.Format("Jan 2 15:04"), W-right, H-8, last.Format("Jan 2 15:04"))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="%s"/>`, line(func(p store.UsagePoint) int { return p.Slivers }))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="5,3" points="%s"/>`, line(func(p store.UsagePoint) int { return p.Nodes }))
		now := pts[len(pts)-1]
		fmt.Fprintf(&b, `<text x="%d" y="12" fill="#1f77b4">■ slivers (%d now)</text><text x="%d" y="12" fill="#d62728">■ nodes in use (%d now)</text>`,
			left, now.Slivers, left+160, now.Nodes)
	}
	b.WriteString(`</svg>`)
	return b.String()
}
