package amtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Python writes script to a file and returns a function that runs it with
// the system's python3 and args, for the tests that hold our XML-RPC to
// Python's xmlrpc.client (what omni is built on). Without /usr/bin/python3
// the test is skipped.
func Python(tb testing.TB, script string) func(args ...string) ([]byte, error) {
	tb.Helper()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		tb.Skip("no " + python)
	}
	file := filepath.Join(tb.TempDir(), "script.py")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		tb.Fatal(err)
	}
	return func(args ...string) ([]byte, error) {
		return exec.Command(python, append([]string{file}, args...)...).CombinedOutput()
	}
}
