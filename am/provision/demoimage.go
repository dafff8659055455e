package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/geniam/geniam/am/agent/docker"
)

// DemoProgram is the package of the demo container's program.
const DemoProgram = "github.com/geniam/geniam/cmd/geni-demo-container"

// DockerAvailable says why Docker cannot be used ("" when it can): the CLI
// builds and saves images, the engine runs them.
func DockerAvailable(ctx context.Context) string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "no docker CLI in PATH"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := docker.New("").Version(ctx); err != nil {
		return "no Docker engine: " + err.Error()
	}
	return ""
}

// BuildDemoImage builds the demo image (FROM scratch, the static
// geni-demo-container binary as /demo, its entrypoint), `docker save`s it to
// tarPath and returns the tar's sha256. The image is removed from the engine
// afterwards: agents load it from the tar like any experimenter's image. It
// needs the Go toolchain and the geniam source (it runs `go build`).
func BuildDemoImage(ctx context.Context, tarPath, tag string) (string, error) {
	dir, err := os.MkdirTemp("", "geniam-demo-image")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "demo"), DemoProgram)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", DemoProgram, err, out)
	}
	dockerfile := "FROM scratch\nCOPY demo /demo\nENTRYPOINT [\"/demo\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	// --no-cache: a build from the cache is the same image (the same ID)
	// as any other build of this program, by make run or by tests running in
	// parallel, and the other builder's rmi below could delete it under this
	// one ("failed to get digest"). Built afresh, each image is its own.
	if err := runCmd(ctx, "docker", "build", "--no-cache", "-q", "-t", tag, dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(tarPath), 0o755); err != nil {
		return "", err
	}
	tmp := tarPath + ".part"
	if err := runCmd(ctx, "docker", "save", "-o", tmp, tag); err != nil {
		return "", err
	}
	_ = runCmd(ctx, "docker", "rmi", tag)
	if err := os.Rename(tmp, tarPath); err != nil {
		return "", err
	}
	return FileSHA256(tarPath)
}

// FileSHA256 is the lowercase hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func runCmd(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
