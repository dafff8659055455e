// Package docker is a small client for the Docker Engine API over its unix
// socket, written with net/http only. It covers what the node agent needs
// (load an image tar, create/start/stop/kill/remove containers, inspect, logs,
// list by label, remove images) and nothing else. The API version is
// negotiated from /_ping, so the same binary talks to Docker 20.10 (API 1.41)
// and to newer engines that refuse old clients.
//
// Nothing here builds a shell string: every call is a JSON request to the
// engine.
package docker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The API versions this client knows how to speak. Below MinAPIVersion the
// engine lacks fields we send; above MaxAPIVersion we have not checked that
// the fields we use kept their meaning, so we ask for MaxAPIVersion.
const (
	MinAPIVersion = "1.40"
	MaxAPIVersion = "1.45"
)

// DefaultSocket is where the Docker engine listens on a standard install.
const DefaultSocket = "/var/run/docker.sock"

// Client talks to one Docker engine. It is safe for concurrent use.
type Client struct {
	http *http.Client

	mu      sync.Mutex
	version string // negotiated API version, "" until the first call
}

// New returns a client for the engine listening on the unix socket path.
func New(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:          8,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 0, // image loads answer only once the tar is read
	}
	return &Client{http: &http.Client{Transport: tr}}
}

// Error is a non-2xx answer from the engine (or an error reported inside a
// 200 JSON stream, with Status 200).
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("docker engine: %s (HTTP %d)", e.Message, e.Status)
}

// IsNotFound reports whether err is the engine saying "no such object".
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// IsConflict reports whether err is a 409 (name in use, image in use, not running).
func IsConflict(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusConflict
}

// Version negotiates (once) and returns the API version in use.
func (c *Client) Version(ctx context.Context) (string, error) {
	c.mu.Lock()
	v := c.version
	c.mu.Unlock()
	if v != "" {
		return v, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("docker engine unreachable: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return "", &Error{Status: resp.StatusCode, Message: "ping failed"}
	}
	v, err = negotiate(resp.Header.Get("Api-Version"))
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.version = v
	c.mu.Unlock()
	return v, nil
}

// negotiate picks the version to speak given the engine's maximum.
func negotiate(server string) (string, error) {
	if server == "" {
		// Engines older than 1.25 do not send the header; they are far too old.
		return "", errors.New("docker engine did not report its API version")
	}
	if compareVersions(server, MinAPIVersion) < 0 {
		return "", fmt.Errorf("docker engine API %s is older than the minimum %s", server, MinAPIVersion)
	}
	if compareVersions(server, MaxAPIVersion) > 0 {
		return MaxAPIVersion, nil
	}
	return server, nil
}

// compareVersions compares dotted numeric versions ("1.41" < "1.5" is false:
// 41 > 5). Non-numeric parts compare as 0.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// do sends one request to /v<version><path> and returns the response when the
// status is 2xx or 304; any other status is turned into an *Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return nil, err
	}
	u := "http://docker/v" + v + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &m) == nil && m.Message != "" {
		msg = m.Message
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

// doJSON sends in (if not nil) as JSON and decodes the answer into out (if not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, query, body, ct)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("docker engine: decoding %s %s: %w", method, path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	}
	return resp.StatusCode, nil
}

// LoadImage streams a `docker save` tar into the engine (POST /images/load)
// and returns the image IDs it loaded. The tar is never held in memory: r is
// copied to the socket as it is read. If reading r fails, the request is
// aborted and the engine discards the partial tar. The engine answers 200 and
// then reports failures inside its JSON stream; those become an *Error.
func (c *Client) LoadImage(ctx context.Context, r io.Reader) ([]string, error) {
	resp, err := c.do(ctx, http.MethodPost, "/images/load", url.Values{"quiet": {"1"}}, r, "application/x-tar")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	refs, err := ParseLoadStream(resp.Body)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, &Error{Status: 200, Message: "image load reported no image"}
	}
	ids := make([]string, 0, len(refs))
	for _, ref := range refs {
		id, err := c.ImageID(ctx, ref)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ParseLoadStream reads the JSON message stream of /images/load and returns
// the references it names ("Loaded image: name:tag" or "Loaded image ID:
// sha256:..."). An error message in the stream is returned as an *Error.
func ParseLoadStream(r io.Reader) ([]string, error) {
	dec := json.NewDecoder(io.LimitReader(r, 4<<20))
	var refs []string
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return refs, nil
		} else if err != nil {
			return nil, fmt.Errorf("docker engine: reading image load answer: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return nil, &Error{Status: 200, Message: m.ErrorDetail.Message}
		}
		if m.Error != "" {
			return nil, &Error{Status: 200, Message: m.Error}
		}
		for _, line := range strings.Split(m.Stream, "\n") {
			line = strings.TrimSpace(line)
			if ref, ok := strings.CutPrefix(line, "Loaded image ID: "); ok {
				refs = append(refs, strings.TrimSpace(ref))
			} else if ref, ok := strings.CutPrefix(line, "Loaded image: "); ok {
				refs = append(refs, strings.TrimSpace(ref))
			}
		}
	}
}

// ImageID resolves a reference (name:tag or id) to the image's full ID.
func (c *Client) ImageID(ctx context.Context, ref string) (string, error) {
	var img struct {
		ID string `json:"Id"`
	}
	if _, err := c.doJSON(ctx, http.MethodGet, "/images/"+escapeRef(ref)+"/json", nil, nil, &img); err != nil {
		return "", err
	}
	if img.ID == "" {
		return "", &Error{Status: 200, Message: "image " + ref + " has no id"}
	}
	return img.ID, nil
}

// ImageVolumes returns the paths the image declares as VOLUME, sorted.
func (c *Client) ImageVolumes(ctx context.Context, ref string) ([]string, error) {
	var img struct {
		Config struct {
			Volumes map[string]struct{} `json:"Volumes"`
		} `json:"Config"`
	}
	if _, err := c.doJSON(ctx, http.MethodGet, "/images/"+escapeRef(ref)+"/json", nil, nil, &img); err != nil {
		return nil, err
	}
	var out []string
	for v := range img.Config.Volumes {
		out = append(out, v)
	}
	sort.Strings(out)
	return out, nil
}

// escapeRef escapes an image reference for a URL path, keeping the "/" of
// repository names (the engine routes /images/{name:.*}/json on them).
func escapeRef(ref string) string {
	parts := strings.Split(ref, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// RemoveImage deletes an image by ID, untagging it as needed. It is not
// forced: an image still used by any container stays (409).
func (c *Client) RemoveImage(ctx context.Context, id string) error {
	_, err := c.doJSON(ctx, http.MethodDelete, "/images/"+escapeRef(id), nil, nil, nil)
	return err
}

// ContainerConfig is the body of POST /containers/create (the subset we use).
type ContainerConfig struct {
	Image           string            `json:"Image"`
	Entrypoint      []string          `json:"Entrypoint,omitempty"`
	Cmd             []string          `json:"Cmd,omitempty"`
	Env             []string          `json:"Env,omitempty"`
	Labels          map[string]string `json:"Labels,omitempty"`
	NetworkDisabled bool              `json:"NetworkDisabled,omitempty"`
	StopTimeout     *int              `json:"StopTimeout,omitempty"`
	HostConfig      HostConfig        `json:"HostConfig"`
}

// HostConfig is the host side of a container.
type HostConfig struct {
	Binds          []string          `json:"Binds,omitempty"`
	NetworkMode    string            `json:"NetworkMode,omitempty"`
	RestartPolicy  RestartPolicy     `json:"RestartPolicy"`
	Memory         int64             `json:"Memory,omitempty"`
	MemorySwap     int64             `json:"MemorySwap,omitempty"`
	NanoCPUs       int64             `json:"NanoCpus,omitempty"`
	PidsLimit      *int64            `json:"PidsLimit,omitempty"`
	Devices        []Device          `json:"Devices,omitempty"`
	SecurityOpt    []string          `json:"SecurityOpt,omitempty"`
	CapDrop        []string          `json:"CapDrop,omitempty"`
	CapAdd         []string          `json:"CapAdd,omitempty"`
	ReadonlyRootfs bool              `json:"ReadonlyRootfs,omitempty"`
	Tmpfs          map[string]string `json:"Tmpfs,omitempty"`
	LogConfig      *LogConfig        `json:"LogConfig,omitempty"`
}

// RestartPolicy is Docker's restart policy: "no", "always", "unless-stopped", "on-failure".
type RestartPolicy struct {
	Name              string `json:"Name"`
	MaximumRetryCount int    `json:"MaximumRetryCount,omitempty"`
}

// Device maps a host device into the container.
type Device struct {
	PathOnHost        string `json:"PathOnHost"`
	PathInContainer   string `json:"PathInContainer"`
	CgroupPermissions string `json:"CgroupPermissions"`
}

// LogConfig selects the container's log driver.
type LogConfig struct {
	Type   string            `json:"Type"`
	Config map[string]string `json:"Config,omitempty"`
}

// CreateContainer creates (does not start) a container and returns its ID.
func (c *Client) CreateContainer(ctx context.Context, name string, cfg ContainerConfig) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	if _, err := c.doJSON(ctx, http.MethodPost, "/containers/create", q, cfg, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// StartContainer starts a created or stopped container. Starting a running
// container is not an error (the engine answers 304).
func (c *Client) StartContainer(ctx context.Context, id string) error {
	_, err := c.doJSON(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/start", nil, nil, nil)
	return err
}

// StopContainer sends SIGTERM and, after grace, SIGKILL. Stopping a stopped
// container is not an error.
func (c *Client) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	q := url.Values{"t": {strconv.Itoa(int(grace / time.Second))}}
	_, err := c.doJSON(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/stop", q, nil, nil)
	return err
}

// KillContainer sends SIGKILL. A container that is not running is not an error.
func (c *Client) KillContainer(ctx context.Context, id string) error {
	_, err := c.doJSON(ctx, http.MethodPost, "/containers/"+url.PathEscape(id)+"/kill", nil, nil, nil)
	if IsConflict(err) {
		return nil
	}
	return err
}

// RemoveContainer force-removes a container and its anonymous volumes. A
// container that does not exist is not an error.
func (c *Client) RemoveContainer(ctx context.Context, id string) error {
	q := url.Values{"force": {"1"}, "v": {"1"}}
	_, err := c.doJSON(ctx, http.MethodDelete, "/containers/"+url.PathEscape(id), q, nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}

// ContainerJSON is the part of GET /containers/{id}/json we read.
type ContainerJSON struct {
	ID           string `json:"Id"`
	Name         string `json:"Name"`
	Image        string `json:"Image"`
	RestartCount int    `json:"RestartCount"`
	State        struct {
		Status     string `json:"Status"` // created, running, paused, restarting, removing, exited, dead
		Running    bool   `json:"Running"`
		Restarting bool   `json:"Restarting"`
		OOMKilled  bool   `json:"OOMKilled"`
		Dead       bool   `json:"Dead"`
		ExitCode   int    `json:"ExitCode"`
		Pid        int    `json:"Pid"`
		Error      string `json:"Error"`
		StartedAt  string `json:"StartedAt"`
		FinishedAt string `json:"FinishedAt"`
	} `json:"State"`
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

// InspectContainer returns the container's state.
func (c *Client) InspectContainer(ctx context.Context, id string) (*ContainerJSON, error) {
	var out ContainerJSON
	if _, err := c.doJSON(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ContainerSummary is one entry of GET /containers/json.
type ContainerSummary struct {
	ID      string            `json:"Id"`
	Names   []string          `json:"Names"`
	ImageID string            `json:"ImageID"`
	State   string            `json:"State"`
	Labels  map[string]string `json:"Labels"`
}

// ListContainers lists every container (running or not) carrying all the
// given labels (key=value).
func (c *Client) ListContainers(ctx context.Context, labels map[string]string) ([]ContainerSummary, error) {
	var filter []string
	for k, v := range labels {
		filter = append(filter, k+"="+v)
	}
	f, err := json.Marshal(map[string][]string{"label": filter})
	if err != nil {
		return nil, err
	}
	var out []ContainerSummary
	q := url.Values{"all": {"1"}, "filters": {string(f)}}
	if _, err := c.doJSON(ctx, http.MethodGet, "/containers/json", q, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Logs returns the last tail lines of the container's stdout and stderr, each
// cut to at most maxBytes (the newest bytes are kept).
func (c *Client) Logs(ctx context.Context, id string, tail, maxBytes int) (stdout, stderr []byte, err error) {
	q := url.Values{"stdout": {"1"}, "stderr": {"1"}, "tail": {strconv.Itoa(tail)}}
	resp, err := c.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/logs", q, nil, "")
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	o, e := &tailBuffer{max: maxBytes}, &tailBuffer{max: maxBytes}
	if err := Demux(resp.Body, o, e); err != nil {
		return nil, nil, err
	}
	return o.buf, e.buf, nil
}

// StreamLogs copies all of the container's stdout and stderr so far to the
// writers, demultiplexed, without holding them in memory.
func (c *Client) StreamLogs(ctx context.Context, id string, stdout, stderr io.Writer) error {
	q := url.Values{"stdout": {"1"}, "stderr": {"1"}}
	resp, err := c.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/logs", q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return Demux(resp.Body, stdout, stderr)
}

// Demux splits the engine's multiplexed log stream (8-byte header: stream
// type, 3 zero bytes, big-endian payload length) into stdout and stderr.
func Demux(r io.Reader, stdout, stderr io.Writer) error {
	br := bufio.NewReader(r)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("docker logs: truncated frame header: %w", err)
		}
		n := int64(hdr[4])<<24 | int64(hdr[5])<<16 | int64(hdr[6])<<8 | int64(hdr[7])
		var w io.Writer
		switch hdr[0] {
		case 0, 1:
			w = stdout
		case 2:
			w = stderr
		default:
			return fmt.Errorf("docker logs: unknown stream type %d", hdr[0])
		}
		if _, err := io.CopyN(w, br, n); err != nil {
			return fmt.Errorf("docker logs: truncated frame: %w", err)
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}
