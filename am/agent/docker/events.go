package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/geniam/geniam/am/agent"
)

// Event is one message of the engine's GET /events stream (the part we read).
type Event struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
	TimeNano int64 `json:"timeNano"`
}

// Events streams the engine's container events for containers carrying all
// the labels, calling fn for each, until ctx ends or the stream breaks.
func (c *Client) Events(ctx context.Context, labels map[string]string, fn func(Event)) error {
	filter := map[string][]string{"type": {"container"}}
	for k, v := range labels {
		filter["label"] = append(filter["label"], k+"="+v)
	}
	f, err := json.Marshal(filter)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, "/events", url.Values{"filters": {string(f)}}, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var e Event
		if err := dec.Decode(&e); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("docker events: the engine closed the stream")
			}
			return fmt.Errorf("docker events: %w", err)
		}
		fn(e)
	}
}

var _ agent.EventSource = Runtime{}

// Events reports the labelled containers' events to the agent.
func (r Runtime) Events(ctx context.Context, labels map[string]string, fn func(agent.ContainerEvent)) error {
	return r.Client.Events(ctx, labels, func(e Event) {
		fn(agent.ContainerEvent{ContainerID: e.Actor.ID, Action: e.Action, Sliver: e.Actor.Attributes[agent.LabelSliver]})
	})
}
