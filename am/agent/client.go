package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// Client is the aggregate's handle on one node agent: the v2 API over
// mutual TLS. Every method returns an *am.Err carrying the agent's geni_code
// when the agent refuses, and an UNAVAILABLE *am.Err when it cannot be
// reached.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client for the agent at baseURL (https://host:1887)
// using tlsConf (see ClientTLSConfig). Requests have no overall timeout
// except data downloads' absence of one: pass contexts with deadlines.
func NewClient(baseURL string, tlsConf *tls.Config) *Client {
	tr := &http.Transport{
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // a start waits for the engine
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       60 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), http: &http.Client{Transport: tr}}
}

// URL is the agent's base URL.
func (c *Client) URL() string { return c.base }

// CloseIdleConnections releases pooled connections to the agent.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

func (c *Client) sliverPath(id string, rest string) (string, error) {
	if err := ValidID(id); err != nil {
		return "", err
	}
	return "/v2/slivers/" + url.PathEscape(id) + rest, nil
}

// call sends one request and decodes a 2xx JSON answer into out.
func (c *Client) call(ctx context.Context, op, method, path string, in, out any) (int, error) {
	resp, err := c.send(ctx, op, method, path, in)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
			return resp.StatusCode, am.Wrap(am.RPCError, err, "%s: unreadable answer from the agent", op)
		}
	}
	return resp.StatusCode, nil
}

// send returns the response when it is 2xx; otherwise the decoded error.
func (c *Client) send(ctx context.Context, op, method, path string, in any) (*http.Response, error) {
	return c.sendWith(ctx, op, method, path, in, nil)
}

func (c *Client) sendWith(ctx context.Context, op, method, path string, in any, hdr http.Header) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, am.Wrap(am.BadArgs, err, "%s: cannot encode the request", op)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, am.Wrap(am.BadArgs, err, "%s: bad agent URL", op)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, am.Wrap(am.TimedOut, err, "%s: the agent did not answer in time", op)
		}
		return nil, am.Wrap(am.Unavailable, err, "%s: the agent at %s is unreachable", op, c.base)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var eb ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &eb) != nil || eb.Code == "" {
		return nil, &am.Err{Code: am.RPCError, Op: op, Msg: fmt.Sprintf("agent answered %s: %s", resp.Status, am.Clip(strings.TrimSpace(string(b)), 200))}
	}
	return nil, eb.asErr(op)
}

// Ping checks that the agent answers and accepts this client.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, "ping", http.MethodGet, "/v2/ping", nil, nil)
	return err
}

// PingInfo pings the agent and returns what it says of itself: among it
// what its kernel supports for links and its disk space (the aggregate's
// health poll records both per node). An agent older than those fields
// reports no links and zero space.
func (c *Client) PingInfo(ctx context.Context) (PingResult, error) {
	var p PingResult
	_, err := c.call(ctx, "ping", http.MethodGet, "/v2/ping", nil, &p)
	return p, err
}

// Disk returns the space of the agent's state filesystem (zero from an
// agent too old to say).
func (c *Client) Disk(ctx context.Context) (Disk, error) {
	var d Disk
	_, err := c.call(ctx, "ping", http.MethodGet, "/v2/ping", nil, &d)
	return d, err
}

// Fetch asks the agent to download and load the sliver's image. It returns
// at once (the agent answers 202) with state "fetching", or "fetched" if
// the same image was already loaded. Use WaitFetched or poll Status.
func (c *Client) Fetch(ctx context.Context, id string, req FetchRequest) (Status, error) {
	return statusOf(c.sliverStatus(ctx, "fetch", http.MethodPut, id, "/image", req))
}

// FetchWait is Fetch, but the agent holds the answer until the fetch ends
// or maxWait passes (?wait=): one round trip instead of polling. A failed
// fetch comes back as an ERROR *am.Err; a fetch still running as a status
// with state "fetching".
func (c *Client) FetchWait(ctx context.Context, id string, req FetchRequest, maxWait time.Duration) (Status, error) {
	return statusOf(c.sliverStatus(ctx, "fetch", http.MethodPut, id, "/image?wait="+url.QueryEscape(maxWait.String()), req))
}

// WaitFetched polls the sliver's status every interval until its image is
// no longer being fetched, and returns an *am.Err if the fetch failed.
func (c *Client) WaitFetched(ctx context.Context, id string, interval time.Duration) (Status, error) {
	for {
		st, err := c.Status(ctx, id)
		if err != nil {
			return st, err
		}
		switch st.Image.State {
		case ImageReady:
			return st, nil
		case ImageFailed:
			return st, &am.Err{Code: am.Error, Op: "fetch", Msg: "fetch of " + id + " failed: " + st.Image.Error}
		case ImageNone:
			return st, &am.Err{Code: am.SearchFailed, Op: "fetch", Msg: "no image is being fetched for " + id}
		}
		select {
		case <-ctx.Done():
			return st, am.Wrap(am.TimedOut, ctx.Err(), "fetch of %s still running", id)
		case <-time.After(interval):
		}
	}
}

// Run creates and starts the sliver's container; created is false if it
// already existed (its status is returned unchanged).
func (c *Client) Run(ctx context.Context, id string, req StartRequest) (st Status, created bool, err error) {
	st, code, err := c.sliverStatus(ctx, "start", http.MethodPut, id, "/container", req)
	return st, code == http.StatusCreated, err
}

// Status returns the sliver's state.
func (c *Client) Status(ctx context.Context, id string) (Status, error) {
	return statusOf(c.sliverStatus(ctx, "status", http.MethodGet, id, "", nil))
}

// List returns every sliver the agent knows (for reconciliation).
func (c *Client) List(ctx context.Context) ([]Status, error) {
	var sts []Status
	_, err := c.call(ctx, "list", http.MethodGet, "/v2/slivers", nil, &sts)
	return sts, err
}

// ListOf returns the slivers of one aggregate instance (and those started
// without one); an agent too old to filter is filtered here.
func (c *Client) ListOf(ctx context.Context, aggregate string) ([]Status, error) {
	var sts []Status
	_, err := c.call(ctx, "list", http.MethodGet, "/v2/slivers?aggregate="+url.QueryEscape(aggregate), nil, &sts)
	return OfAggregate(sts, aggregate), err
}

// Stop stops the sliver's container (geni_stop).
func (c *Client) Stop(ctx context.Context, id string) (Status, error) {
	return statusOf(c.sliverStatus(ctx, "stop", http.MethodPost, id, "/stop", nil))
}

// Start starts the sliver's existing container again (geni_start).
func (c *Client) Start(ctx context.Context, id string) (Status, error) {
	return statusOf(c.sliverStatus(ctx, "start", http.MethodPost, id, "/start", nil))
}

// sliverStatus sends in to a sliver's sub-resource rest and decodes the
// Status the agent answers with, and its HTTP status code.
func (c *Client) sliverStatus(ctx context.Context, op, method, id, rest string, in any) (st Status, code int, err error) {
	p, err := c.sliverPath(id, rest)
	if err != nil {
		return Status{}, 0, err
	}
	code, err = c.call(ctx, op, method, p, in, &st)
	return st, code, err
}

// statusOf drops the HTTP status code of sliverStatus's answer.
func statusOf(st Status, _ int, err error) (Status, error) { return st, err }

// Data returns the sliver's /data as a tar stream; the caller closes it. A
// transfer broken by the agent shows up as a read error, never as a short
// archive that looks complete.
func (c *Client) Data(ctx context.Context, id string) (io.ReadCloser, error) {
	resp, err := c.getStream(ctx, "emit data", id, "/data", nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// getStream GETs a sliver's sub-resource whose body is a stream.
func (c *Client) getStream(ctx context.Context, op, id, sub string, hdr http.Header) (*http.Response, error) {
	p, err := c.sliverPath(id, sub)
	if err != nil {
		return nil, err
	}
	return c.sendWith(ctx, op, http.MethodGet, p, nil, hdr)
}

// DataGzip is Data compressed with gzip, as the agent sends it on the
// wire: the aggregate keeps archives this way. An agent that does not
// compress gets its tar compressed here.
func (c *Client) DataGzip(ctx context.Context, id string) (io.ReadCloser, error) {
	// Asking ourselves keeps net/http from decompressing it for us.
	resp, err := c.getStream(ctx, "emit data", id, "/data", http.Header{"Accept-Encoding": {"gzip"}})
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		return resp.Body, nil
	}
	pr, pw := io.Pipe()
	go func() {
		zw := gzip.NewWriter(pw)
		_, err := io.Copy(zw, resp.Body)
		if err == nil {
			err = zw.Close()
		}
		resp.Body.Close()
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// Logs returns the whole stdout or stderr ("stdout", "stderr") of the
// sliver's container as a stream; the caller closes it.
func (c *Client) Logs(ctx context.Context, id, stream string) (io.ReadCloser, error) {
	resp, err := c.getStream(ctx, "logs", id, "/logs/"+url.PathEscape(stream), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// DeleteData empties the sliver's /data.
func (c *Client) DeleteData(ctx context.Context, id string) error {
	return c.del(ctx, "delete data", id, "/data")
}

// Kill stops and removes the sliver's container.
func (c *Client) Kill(ctx context.Context, id string) error {
	return c.del(ctx, "kill", id, "/container")
}

// RemoveImage removes the sliver's image unless another sliver uses it.
func (c *Client) RemoveImage(ctx context.Context, id string) error {
	return c.del(ctx, "remove image", id, "/image")
}

// Delete removes everything of the sliver on the node.
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.del(ctx, "delete", id, "")
}

func (c *Client) del(ctx context.Context, op, id, rest string) error {
	p, err := c.sliverPath(id, rest)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, op, http.MethodDelete, p, nil, nil)
	return err
}

// UpdateUsers replaces the slice users' keys (geni_update_users).
func (c *Client) UpdateUsers(ctx context.Context, id string, users []User) (Status, error) {
	return statusOf(c.sliverStatus(ctx, "update users", http.MethodPut, id, "/users", UsersRequest{Users: users}))
}

// WaitChange long-polls the agent: it answers as soon as the agent's
// change number differs from after, or after wait, with the slivers that
// changed. An agent that predates /v2/changes answers UNSUPPORTED.
func (c *Client) WaitChange(ctx context.Context, after uint64, wait time.Duration) (ChangesAnswer, error) {
	var a ChangesAnswer
	_, err := c.call(ctx, "changes", http.MethodGet, "/v2/changes?after="+strconv.FormatUint(after, 10)+"&wait="+wait.String(), nil, &a)
	if am.CodeOf(err) == am.SearchFailed { // "no such endpoint"
		return a, am.Errorf(am.Unsupported, "the agent at %s has no /v2/changes (an older agent): state follows the health poll", c.base)
	}
	return a, err
}
