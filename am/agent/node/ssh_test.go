package node_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/docker"
	"github.com/geniam/geniam/am/agent/sshlogin"
	"github.com/geniam/geniam/am/agent/sshlogin/sshtest"
)

// sshLogin is an agent with its SSH server on 127.0.0.1.
type sshLogin struct {
	*testAgent
	srv  *sshlogin.Server
	port int
}

func startSSHAgent(t *testing.T) *sshLogin {
	t.Helper()
	sshtest.NeedClient(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	cfg := testConfig(t)
	cfg.LoginHost, cfg.LoginPort = "127.0.0.1", ln.Addr().(*net.TCPAddr).Port
	a := startAgent(t, cfg)
	srv, err := sshlogin.New(sshlogin.Config{HostKeyFile: filepath.Join(cfg.StateDir, "ssh_host_key"), Logger: cfg.Logger,
		CheckInterval: 200 * time.Millisecond}, a.svc, docker.NewRuntime(""))
	must(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return &sshLogin{testAgent: a, srv: srv, port: cfg.LoginPort}
}

func (l *sshLogin) ssh(t *testing.T, key sshtest.Key, user string, args ...string) (string, int) {
	t.Helper()
	return sshtest.Run(t, key, "127.0.0.1", l.port, user, args...)
}

// TestSSHLogin is the login path of issue 16 on the agent: a key of the
// sliver's users runs a command in the container and gets its exit status,
// another key is refused, geni_update_users adds a key at once, and after
// Delete nobody gets in.
func TestSSHLogin(t *testing.T) {
	needDocker(t)
	l := startSSHAgent(t)
	alice, bob := sshtest.NewKey(t, "alice"), sshtest.NewKey(t, "bob")
	const id = "login1"
	l.fetched(t, id)
	ctx := ctxT(t, 2*time.Minute)
	t0 := time.Now()
	st, _, err := l.client.Run(ctx, id, agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"},
		Users: []agent.User{{URN: "urn:publicid:IDN+geniam.test+user+alice", Keys: []string{alice.Public}}}})
	must(t, err)
	if st.Login == nil || st.Login.Port != l.port || st.Login.Username != id || st.Login.Host != "127.0.0.1" {
		t.Fatalf("status login = %+v, want 127.0.0.1:%d user %s", st.Login, l.port, id)
	}

	out, code := l.ssh(t, alice, id, "/prog", "-out", "hello-from-the-container", "-exit", "3")
	t.Logf("Run to the first ssh command's answer: %s", time.Since(t0).Round(time.Millisecond))
	if code != 3 || !strings.Contains(out, "hello-from-the-container") {
		t.Fatalf("ssh command: exit %d, output %q; want 3 and the program's line", code, out)
	}
	// The session runs inside the container: it sees the sliver's /geni.
	if out, code := l.ssh(t, alice, id, "/prog", "-cat", "/geni/authorized_keys"); code != 0 || !strings.Contains(out, alice.Public) {
		t.Fatalf("reading /geni in the container: exit %d, %q", code, out)
	}
	// A TTY session works too (the image has no shell: a command).
	if out, code := l.ssh(t, alice, id, "-tt", "/prog", "-out", "with-a-tty"); code != 0 || !strings.Contains(out, "with-a-tty") {
		t.Fatalf("ssh -tt: exit %d, %q", code, out)
	}
	// No shell in a FROM scratch image: a clear message, not a hang.
	if out, code := l.ssh(t, alice, id); code != 127 || !strings.Contains(out, "no shell") {
		t.Fatalf("shell on a shell-less image: exit %d, %q", code, out)
	}

	if out, code := l.ssh(t, bob, id, "/prog"); code != 255 {
		t.Fatalf("a key not in the sliver's users got in: exit %d, %q", code, out)
	}
	if out, code := l.ssh(t, alice, "login-other", "/prog"); code != 255 {
		t.Fatalf("a login to an unknown sliver got in: exit %d, %q", code, out)
	}

	_, err = l.client.UpdateUsers(ctx, id, []agent.User{{URN: "urn:publicid:IDN+geniam.test+user+alice", Keys: []string{alice.Public}},
		{URN: "urn:publicid:IDN+geniam.test+user+bob", Keys: []string{bob.Public}}})
	must(t, err)
	if out, code := l.ssh(t, bob, id, "/prog", "-out", "bob-was-here"); code != 0 || !strings.Contains(out, "bob-was-here") {
		t.Fatalf("after geni_update_users bob's key: exit %d, %q", code, out)
	}

	// Stopped (geni_stop, Shutdown): refused; started again: let in.
	_, err = l.client.Stop(ctx, id)
	must(t, err)
	if out, code := l.ssh(t, alice, id, "/prog"); code != 255 {
		t.Fatalf("a stopped sliver let ssh in: exit %d, %q", code, out)
	}
	_, err = l.client.Start(ctx, id)
	must(t, err)
	if out, code := l.ssh(t, alice, id, "/prog", "-out", "back"); code != 0 || !strings.Contains(out, "back") {
		t.Fatalf("after Start: exit %d, %q", code, out)
	}

	// A session open at Delete is cut.
	long := sshtest.Command(alice, "127.0.0.1", l.port, id, "/prog", "-sleep", "5m")
	must(t, long.Start())
	longDone := make(chan error, 1)
	go func() { longDone <- long.Wait() }()
	time.Sleep(500 * time.Millisecond)

	must(t, l.client.Delete(ctx, id))
	if out, code := l.ssh(t, alice, id, "/prog"); code != 255 {
		t.Fatalf("after Delete ssh got in: exit %d, %q", code, out)
	}
	select {
	case <-longDone:
	case <-time.After(10 * time.Second):
		_ = long.Process.Kill()
		t.Fatal("a session open at Delete was not ended")
	}
}

// The exec a login uses: a TTY of the asked size, and a window change
// reaching the process (sshlogin forwards window-change requests here).
func TestExecTerminalSize(t *testing.T) {
	needDocker(t)
	a := startAgent(t, testConfig(t))
	ctx := ctxT(t, 2*time.Minute)
	st := a.started(t, "tty", agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"}})
	rt := docker.NewRuntime("")
	run := func(resize bool) string {
		var out strings.Builder
		p, err := rt.Exec(ctx, st.Container.ID, agent.ExecSpec{Cmd: []string{"/prog", "-winsize", "1s"}, Tty: true, Rows: 30, Cols: 100}, &out, &out)
		must(t, err)
		defer p.Close()
		if resize {
			time.Sleep(200 * time.Millisecond)
			must(t, p.Resize(ctx, 40, 120))
		}
		code, err := p.Wait(ctx)
		must(t, err)
		if code != 0 {
			t.Fatalf("exit %d: %q", code, out.String())
		}
		return strings.TrimSpace(out.String())
	}
	if got := run(false); got != "30 100" {
		t.Errorf("terminal size %q, want the asked 30 100", got)
	}
	if got := run(true); got != "40 120" {
		t.Errorf("terminal size after a resize %q, want 40 120", got)
	}
}

// sftpImage is the test program plus Debian's sftp-server and the
// libraries it loads (ldd), FROM scratch: an image that "allows" scp/sftp.
func sftpImage(t *testing.T) savedImage {
	t.Helper()
	const server = "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(server); err != nil {
		if os.Getenv("GENIAM_REQUIRE_DOCKER") == "1" {
			t.Fatalf("%s is required (openssh-sftp-server)", server)
		}
		t.Skipf("no %s (openssh-sftp-server)", server)
	}
	out, err := exec.Command("ldd", server).Output()
	must(t, err)
	files := []string{server}
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				files = append(files, f)
			}
		}
	}
	df := "FROM scratch\nCOPY prog /prog\n"
	extra := map[string][]byte{}
	for i, f := range files {
		real, err := filepath.EvalSymlinks(f)
		must(t, err)
		name := "f" + strconv.Itoa(i)
		extra[name], err = os.ReadFile(real)
		must(t, err)
		df += "COPY " + name + " " + f + "\n"
	}
	// sftp-server looks its user up, as any image with a user database allows.
	extra["passwd"] = []byte("root:x:0:0:root:/data:/prog\n")
	df += "COPY passwd /etc/passwd\n"
	dir := t.TempDir()
	must(t, progContext(dir, df+"ENTRYPOINT [\"/prog\"]\n", extra))
	im, err := saveImage(dir, "sftp", "sftp-"+randHex(3))
	must(t, err)
	t.Cleanup(func() { os.Remove(im.tar) })
	return im
}

// scp and sftp into a real container whose image has an sftp server.
func TestSCPIntoContainer(t *testing.T) {
	needDocker(t)
	l := startSSHAgent(t)
	im := sftpImage(t)
	alice := sshtest.NewKey(t, "alice")
	ctx := ctxT(t, 2*time.Minute)
	const id = "scp1"
	_, err := l.client.Fetch(ctx, id, agent.FetchRequest{URL: servedURL(im.tar), SHA256: im.digest})
	must(t, err)
	_, err = l.client.WaitFetched(ctx, id, 50*time.Millisecond)
	must(t, err)
	_, _, err = l.client.Run(ctx, id, agent.StartRequest{Command: []string{"/prog", "-sleep", "forever"},
		Users: []agent.User{{URN: "urn:publicid:IDN+geniam.test+user+alice", Keys: []string{alice.Public}}}})
	must(t, err)

	src := filepath.Join(t.TempDir(), "up.txt")
	must(t, os.WriteFile(src, []byte("copied in with scp\n"), 0o644))
	if out, err := sshtest.Transfer("scp", alice, l.port, src, id+"@127.0.0.1:/data/up.txt").CombinedOutput(); err != nil {
		t.Fatalf("scp into the container: %v %s", err, out)
	}
	if got := readTar(t, l.testAgent, id); got["up.txt"] != "copied in with scp\n" {
		t.Fatalf("/data after scp: %v", got)
	}
	// And back out with sftp.
	dst := filepath.Join(t.TempDir(), "back.txt")
	if out, err := sshtest.Transfer("sftp", alice, l.port, id+"@127.0.0.1:/data/up.txt", dst).CombinedOutput(); err != nil {
		t.Fatalf("sftp out of the container: %v %s", err, out)
	}
	if b, _ := os.ReadFile(dst); string(b) != "copied in with scp\n" {
		t.Fatalf("sftp brought back %q", b)
	}
}
