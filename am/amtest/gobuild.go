package amtest

import (
	"bytes"
	"errors"
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

// Run runs cmd, one of our programs, to its end and returns what it wrote
// and its exit code: a code other than 0 is the program's answer, for the
// test to check; a program that cannot be run at all fails the test.
func Run(tb testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	tb.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatalf("%s: %v", cmd, err)
	}
	return out.String(), errb.String(), code
}
