// Package imagetest builds the agent tests' container images: a static Go
// program in an image FROM scratch, built with the docker CLI, `docker
// save`d to a tar and removed from the engine again so that a test really
// loads it. One place for what the agent, runtime and link tests all need,
// and for what every test that uses the engine needs around it: a TestMain
// that builds the images once per run (Main), the docker CLI (Docker,
// Output), whether to skip without an engine (Unavailable, NeedDocker),
// and removing the containers it left (RemoveContainers).
package imagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Image is a saved image.
type Image struct {
	Tar    string // the `docker save` archive
	ID     string // the id the engine gave it (sha256:...)
	SHA256 string // the archive's sha256, hex
	Size   int64  // the archive's size in bytes
}

// GoStatic builds the Go package pkg (an import path, or a directory
// relative to dir when it starts with ".") into the static binary out.
func GoStatic(dir, pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// Save builds the image of the build context dir (holding its Dockerfile)
// as tag, saves it to tar and removes the tag from the engine. The image
// itself is gone from the engine unless another tag holds it; a caller
// that loads it removes it by ID.
//
// A label unique to this build ends every image: the classic builder's
// cache would otherwise make a concurrent build of the same Dockerfile (test
// packages run in parallel) a child of this image, or the same image under
// two tags, and removing it would then fail ("image has dependent child
// images").
func Save(dir, tag, tar string) (Image, error) {
	im := Image{Tar: tar}
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return im, err
	}
	if err := Docker("build", "-q", "--label", "org.geniam.test.build="+hex.EncodeToString(nonce), "-t", tag, dir); err != nil {
		return im, err
	}
	id, err := Output("image", "inspect", "-f", "{{.Id}}", tag)
	if err != nil {
		return im, err
	}
	im.ID = id
	if err := Docker("save", "-o", tar, tag); err != nil {
		return im, err
	}
	if err := Docker("rmi", tag); err != nil {
		return im, err
	}
	f, err := os.Open(tar)
	if err != nil {
		return im, err
	}
	defer f.Close()
	h := sha256.New()
	if im.Size, err = io.Copy(h, f); err != nil {
		return im, err
	}
	im.SHA256 = hex.EncodeToString(h.Sum(nil))
	return im, nil
}

// Docker runs the docker CLI for what it does (classic builder: no
// BuildKit needed); a failure's error carries what the CLI said.
func Docker(args ...string) error {
	_, err := Output(args...)
	return err
}

// Output runs the docker CLI as Docker does and returns what it printed on
// its standard output, trimmed: the tests' one way to ask the engine.
func Output(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out)), nil
}

// Main runs the tests of a package whose tests load images it builds once
// per run, and returns their exit code (for os.Exit, after any clean-up of
// the caller's own). It parses the flags and makes *dir, a directory for
// the run that is removed at its end. Unless the binary only fuzzes or
// lists tests, or Docker is Unavailable, build then builds the images
// (into *dir) and returns what to undo after the tests. Why there are no
// images (that reason, or build's error) goes to *dockerSkip before any
// test runs: the tests that need Docker skip with it (NeedDocker).
func Main(m *testing.M, name string, dir, dockerSkip *string, build func() (undo func(), err error)) int {
	flag.Parse()
	tmp, err := os.MkdirTemp("", name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	*dir = tmp
	if noImageRun() {
		*dockerSkip = "fuzzing or listing: the test images are not built"
	} else {
		*dockerSkip = Unavailable()
	}
	if *dockerSkip == "" {
		undo, err := build()
		if err != nil {
			*dockerSkip = err.Error()
		} else if undo != nil {
			defer undo()
		}
	}
	return m.Run()
}

// noImageRun reports whether this test binary only fuzzes or lists tests,
// so that its TestMain need not build images.
func noImageRun() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// Unavailable says why the tests cannot use Docker ("" when they can):
// they need the docker CLI, which builds and saves their images, and the
// engine it talks to, which runs them.
func Unavailable() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "no docker CLI in PATH"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Sprintf("no Docker engine: %v: %s", err, bytes.TrimSpace(out))
	}
	return ""
}

// NeedDocker skips tb when why (the reason the engine is unavailable) is
// not "", or fails it when GENIAM_REQUIRE_DOCKER=1: CI must not pass by
// skipping.
func NeedDocker(tb testing.TB, why string) {
	tb.Helper()
	if why == "" {
		return
	}
	if os.Getenv("GENIAM_REQUIRE_DOCKER") == "1" {
		tb.Fatalf("Docker is required (GENIAM_REQUIRE_DOCKER=1) but unavailable: %s", why)
	}
	tb.Skipf("skipping: Docker unavailable: %s", why)
}

// RemoveContainers force-removes the containers that carry the label key
// with a value starting with prefix: what one test, or a whole test run,
// left on the engine.
func RemoveContainers(key, prefix string) {
	out, _ := Output("ps", "-a", "--filter", "label="+key, "--format", `{{.ID}} {{.Label "`+key+`"}}`)
	for _, line := range strings.Split(out, "\n") {
		if id, value, ok := strings.Cut(line, " "); ok && strings.HasPrefix(value, prefix) {
			_ = Docker("rm", "-f", id)
		}
	}
}
