package amtest

import (
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// GoBuild builds the command pkg (an import path) into the test's temporary
// directory and returns the binary's path: the tests that run our own
// programs as processes (the aggregate, the node agent, geni) build them
// this one way.
func GoBuild(tb testing.TB, pkg string) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}
