package docker

import (
	"context"
	"net/http"
	"net/url"

	"github.com/geniam/geniam/am/agent"
)

// StatsJSON is the part of GET /containers/{id}/stats we read.
type StatsJSON struct {
	CPUStats struct {
		CPUUsage struct {
			TotalUsage uint64 `json:"total_usage"`
		} `json:"cpu_usage"`
	} `json:"cpu_stats"`
	Networks map[string]struct {
		RxBytes uint64 `json:"rx_bytes"`
		TxBytes uint64 `json:"tx_bytes"`
	} `json:"networks"`
}

// Stats reads the container's counters once (stream=false, one-shot: no
// second sample is waited for).
func (c *Client) Stats(ctx context.Context, id string) (*StatsJSON, error) {
	var out StatsJSON
	q := url.Values{"stream": {"false"}, "one-shot": {"true"}}
	if _, err := c.doJSON(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/stats", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

var _ agent.StatsSource = Runtime{}

// Stats reports CPU time and network bytes for idle detection.
func (r Runtime) Stats(ctx context.Context, id string) (agent.ContainerStats, error) {
	j, err := r.Client.Stats(ctx, id)
	if err != nil {
		return agent.ContainerStats{}, translate(err)
	}
	st := agent.ContainerStats{CPUNanos: j.CPUStats.CPUUsage.TotalUsage}
	for _, n := range j.Networks {
		st.NetBytes += n.RxBytes + n.TxBytes
	}
	return st, nil
}
