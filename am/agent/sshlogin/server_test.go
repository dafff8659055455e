package sshlogin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/sshlogin/sshtest"
)

// The session mechanics (stdin, exit status, sftp and scp, refusals) are
// tested here against a stand-in "container" that runs the processes in a
// temporary directory of this machine; the real engine is in the agent's
// and the aggregate's tests (TestSSHLogin, TestSSHLoginEndToEnd).

// hostExec is an agent.Execer running processes on this machine.
type hostExec struct{}

func (hostExec) PathExists(ctx context.Context, _, path string) (bool, error) {
	_, err := os.Stat(path)
	return err == nil, nil
}

func (hostExec) Exec(ctx context.Context, dir string, spec agent.ExecSpec, stdout, stderr io.Writer) (agent.ExecProcess, error) {
	cmd := exec.Command(spec.Cmd[0], spec.Cmd[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, stdout, stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &hostProcess{cmd: cmd, in: in, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

type hostProcess struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}
}

func (p *hostProcess) Write(b []byte) (int, error)                  { return p.in.Write(b) }
func (p *hostProcess) CloseStdin() error                            { return p.in.Close() }
func (p *hostProcess) Resize(context.Context, uint32, uint32) error { return nil }
func (p *hostProcess) Close() error                                 { _ = p.cmd.Process.Kill(); return nil }
func (p *hostProcess) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// targets is a stand-in agent: sliver id -> target, and the session
// events reported.
type targets struct {
	mu       sync.Mutex
	m        map[string]agent.LoginTarget
	sessions []agent.SessionEvent
}

func (t *targets) NoteSession(ev agent.SessionEvent) {
	t.mu.Lock()
	t.sessions = append(t.sessions, ev)
	t.mu.Unlock()
}

// reported waits a little for n session events and returns them.
func (t *targets) reported(n int) []agent.SessionEvent {
	for i := 0; i < 50; i++ {
		t.mu.Lock()
		got := append([]agent.SessionEvent(nil), t.sessions...)
		t.mu.Unlock()
		if len(got) >= n {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]agent.SessionEvent(nil), t.sessions...)
}

func (t *targets) LoginTarget(id string) (agent.LoginTarget, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lt, ok := t.m[id]
	if !ok {
		return lt, am.Errorf(am.SearchFailed, "no sliver %s", id)
	}
	return lt, nil
}

func (t *targets) NoteActivity(string) {}

func TestSessions(t *testing.T) {
	sshtest.NeedClient(t)
	dir := t.TempDir()
	alice, bob := sshtest.NewKey(t, "alice"), sshtest.NewKey(t, "bob")
	const aliceURN, sliverURN = "urn:publicid:IDN+t+user+alice", "urn:publicid:IDN+t+sliver+s1"
	tg := &targets{m: map[string]agent.LoginTarget{"s1": {SliverID: "s1", ContainerID: dir, SliverURN: sliverURN,
		SliceURN: "urn:publicid:IDN+t+slice+x", Users: []agent.User{{URN: aliceURN, Keys: []string{alice.Public}}}}}}
	srv, err := New(Config{HostKeyFile: filepath.Join(t.TempDir(), "hostkey"), CheckInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, tg, hostExec{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	run := func(key sshtest.Key, user string, args ...string) (string, int) {
		return sshtest.Run(t, key, "127.0.0.1", port, user, args...)
	}

	// stdout and stderr are two channels: their order is not kept.
	if out, code := run(alice, "s1", "echo out; echo err >&2; exit 4"); code != 4 || (out != "out\nerr\n" && out != "err\nout\n") {
		t.Errorf("exec: exit %d, %q; want 4 and both streams", code, out)
	}
	// The session's start and end are reported for the audit trail: whose
	// key, from where, the exit status; the command line stays in the log.
	if evs := tg.reported(2); len(evs) != 2 || evs[0].Event != agent.SessionStart || evs[1].Event != agent.SessionEnd ||
		evs[0].Session == "" || evs[0].Session != evs[1].Session || evs[1].User != aliceURN || evs[1].SliverURN != sliverURN ||
		!strings.HasPrefix(evs[1].Key, "SHA256:") || !strings.HasPrefix(evs[1].Remote, "127.0.0.1:") || evs[1].Command != "exec" ||
		evs[1].ExitStatus == nil || *evs[1].ExitStatus != 4 || evs[0].ExitStatus != nil || evs[1].At.Before(evs[0].At) {
		t.Errorf("session events: %+v", evs)
	}
	// stdin reaches the process and its end is passed on.
	cmd := sshtest.Command(alice, "127.0.0.1", port, "s1", "wc -c")
	cmd.Stdin = strings.NewReader("twelve bytes")
	if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "12" {
		t.Errorf("stdin: %q %v", out, err)
	}
	if _, code := run(bob, "s1", "true"); code != 255 {
		t.Errorf("a key not in the users: exit %d, want 255", code)
	}
	if _, code := run(alice, "nobody", "true"); code != 255 {
		t.Errorf("an unknown sliver: exit %d, want 255", code)
	}

	// sftp and scp (which speaks sftp) when the "image" has an sftp server.
	if _, err := os.Stat(sftpServers[0]); err == nil {
		src := filepath.Join(t.TempDir(), "up.txt")
		if err := os.WriteFile(src, []byte("via scp\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := sshtest.Transfer("scp", alice, port, src, "s1@127.0.0.1:"+dir+"/copied.txt").CombinedOutput(); err != nil {
			t.Fatalf("scp: %v %s", err, out)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "copied.txt")); string(b) != "via scp\n" {
			t.Errorf("scp copied %q", b)
		}
	} else if os.Getenv("GENIAM_REQUIRE_DOCKER") == "1" {
		t.Errorf("no %s here: install openssh-sftp-server to test sftp and scp", sftpServers[0])
	}

	// Taking the key away ends an open session within a check interval.
	long := sshtest.Command(alice, "127.0.0.1", port, "s1", "sleep 60")
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	tg.mu.Lock()
	tg.m["s1"] = agent.LoginTarget{SliverID: "s1", ContainerID: dir}
	tg.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- long.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = long.Process.Kill()
		t.Fatal("the session went on after the key was taken away")
	}
	// Its end is reported too, without an exit status. (The ends of the
	// sessions before it may be reported after it: the server reports each
	// as its own goroutine finishes.)
	var cutEnd *agent.SessionEvent
	for i := 0; i < 50 && cutEnd == nil; i++ {
		evs := tg.reported(0)
		for k := range evs {
			if evs[k].Event == agent.SessionEnd && evs[k].ExitStatus == nil {
				cutEnd = &evs[k]
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cutEnd == nil {
		t.Errorf("no end without an exit status was reported for the cut session: %+v", tg.reported(0))
	}
}
