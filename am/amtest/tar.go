package amtest

import (
	"archive/tar"
	"io"
	"testing"
)

// TarFiles reads a tar (a sliver's /data as the agent or the aggregate
// sends it) and maps its regular files to their contents.
func TarFiles(tb testing.TB, r io.Reader) map[string]string {
	tb.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				tb.Fatal(err)
			}
			out[h.Name] = string(b)
		}
	}
}
