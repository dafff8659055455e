package amtest

import (
	"os"
	"testing"
)

// ReadFile returns the contents of a file a test needs (testdata, the
// examples, samples of other tools), or fails the test.
func ReadFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
