package docker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// The engine's exec API runs a process inside a running container (what
// `docker exec` does). The node agent's SSH server uses it, so that an
// experimenter logs in to a container that has no sshd.

// ExecConfig is the body of POST /containers/{id}/exec.
type ExecConfig struct {
	Cmd          []string `json:"Cmd"`
	Env          []string `json:"Env,omitempty"`
	Tty          bool     `json:"Tty"`
	AttachStdin  bool     `json:"AttachStdin"`
	AttachStdout bool     `json:"AttachStdout"`
	AttachStderr bool     `json:"AttachStderr"`
	WorkingDir   string   `json:"WorkingDir,omitempty"`
	ConsoleSize  *[2]uint `json:"ConsoleSize,omitempty"` // [height, width], API 1.42+; ignored before
}

// ExecCreate prepares a process in the container and returns the exec id.
func (c *Client) ExecCreate(ctx context.Context, containerID string, cfg ExecConfig) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	if _, err := c.doJSON(ctx, http.MethodPost, "/containers/"+url.PathEscape(containerID)+"/exec", nil, cfg, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// ExecAttach is a started exec process: the hijacked connection to the
// engine. Write is the process's stdin; Output yields its output (raw with a
// TTY, multiplexed without: see Demux).
type ExecAttach struct {
	conn net.Conn
	out  io.Reader
	once sync.Once
}

// Write sends bytes to the process's stdin.
func (a *ExecAttach) Write(p []byte) (int, error) { return a.conn.Write(p) }

// CloseStdin half-closes the connection: the process reads end of file.
func (a *ExecAttach) CloseStdin() error {
	if cw, ok := a.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Output is the process's output stream; it ends when the process does.
func (a *ExecAttach) Output() io.Reader { return a.out }

// Close drops the connection (the process keeps running unless it reads
// its stdin or writes to a closed terminal).
func (a *ExecAttach) Close() error {
	var err error
	a.once.Do(func() { err = a.conn.Close() })
	return err
}

// ExecStart starts the exec process and returns the hijacked connection.
// The HTTP client of Client cannot hand back a connection that can be
// half-closed, so this one request is written by hand on its own socket
// connection (POST /exec/{id}/start with Upgrade: tcp, answered 101).
func (c *Client) ExecStart(ctx context.Context, execID string, tty bool) (*ExecAttach, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("docker engine unreachable: %w", err)
	}
	body, _ := json.Marshal(map[string]bool{"Detach": false, "Tty": tty})
	req, err := http.NewRequest(http.MethodPost, "http://docker/v"+v+"/exec/"+url.PathEscape(execID)+"/start", bytes.NewReader(body))
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("docker exec start: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
		return &ExecAttach{conn: conn, out: br}, nil
	case http.StatusOK:
		// An engine that does not upgrade streams in the body.
		return &ExecAttach{conn: conn, out: resp.Body}, nil
	default:
		defer conn.Close()
		return nil, readError(resp)
	}
}

// ExecResize sets the terminal size of an exec process with a TTY.
func (c *Client) ExecResize(ctx context.Context, execID string, rows, cols uint32) error {
	q := url.Values{"h": {strconv.FormatUint(uint64(rows), 10)}, "w": {strconv.FormatUint(uint64(cols), 10)}}
	_, err := c.doJSON(ctx, http.MethodPost, "/exec/"+url.PathEscape(execID)+"/resize", q, nil, nil)
	return err
}

// ExecState is the part of GET /exec/{id}/json we read.
type ExecState struct {
	Running  bool `json:"Running"`
	ExitCode *int `json:"ExitCode"`
	Pid      int  `json:"Pid"`
}

// ExecInspect returns whether the exec process runs and its exit code.
func (c *Client) ExecInspect(ctx context.Context, execID string) (ExecState, error) {
	var out ExecState
	_, err := c.doJSON(ctx, http.MethodGet, "/exec/"+url.PathEscape(execID)+"/json", nil, nil, &out)
	return out, err
}

// PathExists reports whether path exists in the container's file system
// (HEAD /containers/{id}/archive). A HEAD answer has no body, so a missing
// container also reads as false: callers inspect the container first.
func (c *Client) PathExists(ctx context.Context, containerID, path string) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, "/containers/"+url.PathEscape(containerID)+"/archive", url.Values{"path": {path}}, nil, "")
	if IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return true, nil
}

var _ agent.Execer = Runtime{}

// Exec starts a process in the container and copies its output to the
// writers (demultiplexed when there is no TTY) until it ends.
func (r Runtime) Exec(ctx context.Context, containerID string, spec agent.ExecSpec, stdout, stderr io.Writer) (agent.ExecProcess, error) {
	cfg := ExecConfig{Cmd: spec.Cmd, Env: spec.Env, Tty: spec.Tty, AttachStdin: true, AttachStdout: true, AttachStderr: true}
	if spec.Tty && spec.Rows > 0 && spec.Cols > 0 {
		cfg.ConsoleSize = &[2]uint{uint(spec.Rows), uint(spec.Cols)}
	}
	id, err := r.ExecCreate(ctx, containerID, cfg)
	if err != nil {
		return nil, translate(err)
	}
	att, err := r.ExecStart(ctx, id, spec.Tty)
	if err != nil {
		return nil, translate(err)
	}
	p := &execProcess{c: r.Client, id: id, att: att, done: make(chan struct{})}
	if spec.Tty && spec.Rows > 0 && spec.Cols > 0 {
		// Engines before API 1.42 ignore ConsoleSize.
		_ = p.Resize(ctx, spec.Rows, spec.Cols)
	}
	go func() {
		defer close(p.done)
		if spec.Tty {
			_, p.copyErr = io.Copy(stdout, att.Output())
		} else {
			p.copyErr = Demux(att.Output(), stdout, stderr)
		}
	}()
	return p, nil
}

type execProcess struct {
	c       *Client
	id      string
	att     *ExecAttach
	done    chan struct{}
	copyErr error
}

func (p *execProcess) Write(b []byte) (int, error) { return p.att.Write(b) }
func (p *execProcess) CloseStdin() error           { return p.att.CloseStdin() }
func (p *execProcess) Close() error                { return p.att.Close() }

func (p *execProcess) Resize(ctx context.Context, rows, cols uint32) error {
	return translate(p.c.ExecResize(ctx, p.id, rows, cols))
}

// Wait waits for the output to end, then for the engine to record the exit
// code (it may lag the stream's end by a moment).
func (p *execProcess) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	giveUp := time.Now().Add(10 * time.Second) // e.g. the container died under it
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		st, err := p.c.ExecInspect(ctx, p.id)
		if err != nil {
			return -1, translate(err)
		}
		if !st.Running && st.ExitCode != nil {
			return *st.ExitCode, nil
		}
		if time.Now().After(giveUp) {
			return -1, fmt.Errorf("docker exec %s: the output ended but the engine reports no exit code", p.id)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// PathExists reports whether the path exists in the container.
func (r Runtime) PathExists(ctx context.Context, containerID, path string) (bool, error) {
	ok, err := r.Client.PathExists(ctx, containerID, path)
	return ok, translate(err)
}

// CopyTo unpacks a tar (plain or compressed) into dir of the container
// (PUT /containers/{id}/archive); the engine extracts inside the
// container's root file system.
func (c *Client) CopyTo(ctx context.Context, containerID, dir string, tar io.Reader) error {
	q := url.Values{"path": {dir}, "noOverwriteDirNonDir": {"true"}}
	resp, err := c.do(ctx, http.MethodPut, "/containers/"+url.PathEscape(containerID)+"/archive", q, tar, "application/x-tar")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.Body.Close()
}

var _ agent.Copier = Runtime{}

// CopyTo unpacks the tar into the container.
func (r Runtime) CopyTo(ctx context.Context, containerID, dir string, tar io.Reader) error {
	return translate(r.Client.CopyTo(ctx, containerID, dir, tar))
}
