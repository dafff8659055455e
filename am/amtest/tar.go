package amtest

import (
	"archive/tar"
	"io"
	"maps"
	"slices"
	"testing"
)

// TarEntries reads a tar (a sliver's /data as the agent or the aggregate
// sends it) and calls fn with each entry's header and contents, in order;
// a broken archive fails tb.
func TarEntries(tb testing.TB, r io.Reader, fn func(h *tar.Header, contents io.Reader)) {
	tb.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
		fn(h, tr)
	}
}

// TarFiles reads a tar and maps its regular files to their contents.
func TarFiles(tb testing.TB, r io.Reader) map[string]string {
	tb.Helper()
	out := map[string]string{}
	TarEntries(tb, r, func(h *tar.Header, contents io.Reader) {
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(contents)
			if err != nil {
				tb.Fatal(err)
			}
			out[h.Name] = string(b)
		}
	})
	return out
}

// WriteTar is the other way round: it writes files (name to contents) to w
// as a tar of regular files, in the order of their names, so that the same
// files always make the same bytes (a test image's archive keeps its
// digest). Tests write image archives with it and, through a gzip.Writer,
// install tarballs.
func WriteTar(tb testing.TB, w io.Writer, files map[string]string) {
	tb.Helper()
	tw := tar.NewWriter(w)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
}
