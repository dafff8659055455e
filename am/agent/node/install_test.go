package node_test

import (
	"compress/gzip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/amtest"
)

// writeTarGz writes a gzipped tar of the files into the image server's
// directory and returns its URL.
func writeTarGz(t *testing.T, name string, files map[string]string) string {
	t.Helper()
	f, err := os.Create(servedPath(name))
	must(t, err)
	defer f.Close()
	zw := gzip.NewWriter(f)
	amtest.WriteTar(t, zw, files)
	must(t, zw.Close())
	t.Cleanup(func() { os.Remove(f.Name()) })
	return servedURL(name)
}

// services/install: the tarball is unpacked at install_path (created) before
// the start command, which reads it; a missing tarball fails the sliver with
// the reason, and leaves no container behind.
func TestInstall(t *testing.T) {
	needDocker(t)
	a := startAgent(t, testConfig(t))
	ctx := ctxT(t, 2*time.Minute)
	url := writeTarGz(t, "install-"+randHex(3)+".tar.gz", map[string]string{"hello.txt": "installed before the start\n", "sub/x": "y"})

	a.started(t, "inst", agent.StartRequest{Command: []string{"/prog", "-cat", "/opt/app/hello.txt", "-cat", "/opt/app/sub/x"},
		Install: []agent.Install{{URL: url, Path: "/opt/app"}}})
	st := a.waitFor(t, "inst", 20*time.Second, "exited", inState(agent.StateExited))
	if *st.ExitCode != 0 || !strings.Contains(st.StdoutTail, "installed before the start\ny") {
		t.Fatalf("the start command did not read the installed files: exit %d, stdout %q stderr %q", *st.ExitCode, st.StdoutTail, st.StderrTail)
	}

	a.fetched(t, "inst-bad")
	_, _, err := a.client.Run(ctx, "inst-bad", agent.StartRequest{Command: []string{"/prog"},
		Install: []agent.Install{{URL: servedURL("no-such.tar.gz"), Path: "/opt"}}})
	if am.CodeOf(err) != am.Error || !strings.Contains(am.MessageOf(err), "no-such.tar.gz") {
		t.Fatalf("install of a missing tarball: %v, want ERROR naming it", err)
	}
	st, err = a.client.Status(ctx, "inst-bad")
	must(t, err)
	if st.State != agent.StateFailed || !strings.Contains(st.Reason, "install of") || st.Container != nil {
		t.Fatalf("status after a failed install: %+v", st)
	}
	if _, _, err := a.client.Run(ctx, "inst-bad", agent.StartRequest{Install: []agent.Install{{URL: url, Path: "../etc"}}}); am.CodeOf(err) != am.BadArgs {
		t.Fatalf("a relative install path: %v, want BADARGS", err)
	}
}
