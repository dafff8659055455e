// Package runtimetest is the conformance suite of agent.Runtime: what the
// agent relies on from a container runtime, run against every runtime (the
// Docker engine in am/agent/docker, the in-memory one in am/agent/memruntime)
// so that agent tests on the in-memory runtime say something about Docker.
// The containers run the agent tests' program (am/agent/testdata/prog) with
// only the flags both runtimes understand: -out, -err, -write, -append,
// -sleep, -exit.
package runtimetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run checks rt against the agent's expectations. archive is an image whose
// entrypoint is the test program (ProgImage, or FakeImage for a runtime
// that interprets the flags itself). Every container and the image are
// removed again, also when a check fails.
func Run(t *testing.T, rt agent.Runtime, archive []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	run := "runtimetest-" + randHex(4)
	labels := map[string]string{"org.geniam.runtimetest": run}
	t.Cleanup(func() {
		cs, _ := rt.List(context.Background(), labels)
		for _, c := range cs {
			_ = rt.Remove(context.Background(), c.ID)
		}
	})

	if _, err := rt.LoadImage(ctx, strings.NewReader("this is not a tar")); err == nil {
		t.Fatal("LoadImage accepted garbage")
	}
	image, err := rt.LoadImage(ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	t.Cleanup(func() { _ = rt.RemoveImage(context.Background(), image) })
	if !strings.HasPrefix(image, "sha256:") {
		t.Errorf("image id %q, want sha256:...", image)
	}
	if again, err := rt.LoadImage(ctx, bytes.NewReader(archive)); err != nil || again != image {
		t.Errorf("loading the same archive again: %q, %v; want %q", again, err, image)
	}

	n := 0
	create := func(t *testing.T, cmd ...string) string {
		t.Helper()
		n++
		id, err := rt.Create(ctx, agent.ContainerSpec{
			Name: fmt.Sprintf("%s-%d", run, n), Image: image, Cmd: cmd, Labels: labels, Network: "none",
			Restart: agent.RestartPolicy{Name: "no"},
		})
		if err != nil {
			t.Fatalf("Create %v: %v", cmd, err)
		}
		return id
	}
	inspect := func(t *testing.T, id string) agent.ContainerState {
		t.Helper()
		s, err := rt.Inspect(ctx, id)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		return s
	}
	waitExit := func(t *testing.T, id string) agent.ContainerState {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if s := inspect(t, id); !s.Running {
				return s
			}
		}
		t.Fatalf("container %s still runs after 30 s", id)
		return agent.ContainerState{}
	}

	t.Run("missing", func(t *testing.T) {
		if _, err := rt.Inspect(ctx, run+"-none"); !errors.Is(err, agent.ErrNotFound) {
			t.Errorf("Inspect of a missing container: %v, want ErrNotFound", err)
		}
		if err := rt.Remove(ctx, run+"-none"); err != nil {
			t.Errorf("Remove of a missing container: %v, want nil", err)
		}
		if _, err := rt.Create(ctx, agent.ContainerSpec{Name: run + "-noimage", Image: "sha256:" + strings.Repeat("0", 64), Labels: labels, Network: "none"}); err == nil {
			t.Error("Create from a missing image succeeded")
		}
	})

	t.Run("exit", func(t *testing.T) {
		id := create(t, "-out", "hello", "-err", "oops", "-exit", "3")
		s := inspect(t, id)
		if s.Status != "created" || s.Running || s.Labels["org.geniam.runtimetest"] != run {
			t.Errorf("created container: %+v", s)
		}
		if err := rt.Start(ctx, id); err != nil {
			t.Fatalf("Start: %v", err)
		}
		s = waitExit(t, id)
		if s.Status != "exited" || s.ExitCode != 3 || s.StartedAt.IsZero() || s.FinishedAt.IsZero() {
			t.Errorf("exited container: %+v", s)
		}
		o, e, err := rt.Logs(ctx, id, 10, 1024)
		if err != nil || string(o) != "hello\n" || string(e) != "oops\n" {
			t.Errorf("Logs: %q, %q, %v; want hello, oops", o, e, err)
		}
		var so, se bytes.Buffer
		if err := rt.StreamLogs(ctx, id, &so, &se); err != nil || so.String() != "hello\n" || se.String() != "oops\n" {
			t.Errorf("StreamLogs: %q, %q, %v", so.String(), se.String(), err)
		}
		if err := rt.RemoveImage(ctx, image); !errors.Is(err, agent.ErrInUse) {
			t.Errorf("RemoveImage of an image in use: %v, want ErrInUse", err)
		}
		if err := rt.Remove(ctx, id); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if _, err := rt.Inspect(ctx, id); !errors.Is(err, agent.ErrNotFound) {
			t.Errorf("Inspect after Remove: %v, want ErrNotFound", err)
		}
	})

	t.Run("tail", func(t *testing.T) {
		// Only stdout: the engine counts tail lines over both streams.
		id := create(t, "-out", "one\ntwo\nthree")
		defer func() {
			if err := rt.Remove(ctx, id); err != nil {
				t.Errorf("Remove: %v", err)
			}
		}()
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitExit(t, id)
		for _, c := range []struct {
			lines, max int
			out, err   string
		}{{1, 1024, "three\n", ""}, {2, 1024, "two\nthree\n", ""}, {10, 4, "ree\n", ""}} {
			o, e, err := rt.Logs(ctx, id, c.lines, c.max)
			if err != nil || string(o) != c.out || string(e) != c.err {
				t.Errorf("Logs(%d lines, %d bytes): %q, %q, %v; want %q, %q", c.lines, c.max, o, e, err, c.out, c.err)
			}
		}
	})

	t.Run("stop and kill", func(t *testing.T) {
		id := create(t, "-sleep", "forever")
		if err := rt.Kill(ctx, id); err != nil {
			t.Errorf("Kill of a container that is not running: %v", err)
		}
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		if s := inspect(t, id); !s.Running || s.Status != "running" {
			t.Fatalf("started container: %+v", s)
		}
		if err := rt.Start(ctx, id); err != nil {
			t.Errorf("Start of a running container: %v", err)
		}
		if err := rt.Stop(ctx, id, 10*time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if s := inspect(t, id); s.Running || s.Status != "exited" {
			t.Errorf("stopped container: %+v", s)
		}
		if err := rt.Start(ctx, id); err != nil {
			t.Fatalf("restart: %v", err)
		}
		if err := rt.Kill(ctx, id); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if s := waitExit(t, id); s.Status != "exited" {
			t.Errorf("killed container: %+v", s)
		}
		ids := []string{id, create(t, "-sleep", "forever")}
		if err := rt.Start(ctx, ids[1]); err != nil {
			t.Fatal(err)
		}
		cs, err := rt.List(ctx, labels)
		if err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		for _, c := range cs {
			found[c.ID] = c.Running
		}
		if running, ok := found[ids[1]]; !ok || !running {
			t.Errorf("List: %+v; want the running %s", cs, ids[1])
		}
		if _, ok := found[ids[0]]; !ok {
			t.Errorf("List: %+v; want the exited %s", cs, ids[0])
		}
		if none, err := rt.List(ctx, map[string]string{"org.geniam.runtimetest": run + "-other"}); err != nil || len(none) != 0 {
			t.Errorf("List of another label: %+v, %v", none, err)
		}
		for _, id := range ids {
			if err := rt.Remove(ctx, id); err != nil { // the second one still runs
				t.Errorf("Remove: %v", err)
			}
		}
	})

	t.Run("image command", func(t *testing.T) {
		// No command in the spec: the image's (ProgImage and the archives
		// of FakeImageConfig say -out "default command").
		id := create(t)
		defer func() { _ = rt.Remove(ctx, id) }()
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		waitExit(t, id)
		if o, _, err := rt.Logs(ctx, id, 10, 1024); err != nil || string(o) != "default command\n" {
			t.Errorf("Logs of the image's command: %q, %v", o, err)
		}
	})

	t.Run("data and restart policy", func(t *testing.T) {
		// -append writes /data/runs at each run; on-failure with two
		// retries runs it three times, then it stays exited.
		dir := t.TempDir()
		n++
		id, err := rt.Create(ctx, agent.ContainerSpec{
			Name: fmt.Sprintf("%s-%d", run, n), Image: image, Cmd: []string{"-append", "runs", "-exit", "1"}, Labels: labels,
			Network: "none", Mounts: []agent.Mount{{Host: dir, Container: "/data"}},
			Restart: agent.RestartPolicy{Name: "on-failure", MaxRetries: 2},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rt.Remove(ctx, id) }()
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		var s agent.ContainerState
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if s = inspect(t, id); s.Status == "exited" && s.RestartCount == 2 {
				break
			}
		}
		if s.Status != "exited" || s.RestartCount != 2 || s.ExitCode != 1 {
			t.Fatalf("after its retries: %+v", s)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "runs")); err != nil || string(b) != "run\nrun\nrun\n" {
			t.Errorf("/data/runs after three runs: %q, %v", b, err)
		}
	})

	t.Run("remove image", func(t *testing.T) {
		if err := rt.RemoveImage(ctx, image); err != nil {
			t.Fatalf("RemoveImage of an unused image: %v", err)
		}
		if err := rt.RemoveImage(ctx, image); err != nil {
			t.Errorf("RemoveImage of a removed image: %v, want nil", err)
		}
	})
}
