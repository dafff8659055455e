package node

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/amtest"
)

// must fails the test on an error: the internal tests' copy of the
// harness's must (another package).
func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestVerifyingReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB
	t.Run("good", func(t *testing.T) {
		got, err := io.ReadAll(iotest.OneByteReader(newVerifyingReader(bytes.NewReader(data), digestOf(data), 0)))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("err %v, %d bytes", err, len(got))
		}
	})
	t.Run("small", func(t *testing.T) {
		got, err := io.ReadAll(newVerifyingReader(strings.NewReader("tiny"), digestOf([]byte("tiny")), 0))
		if err != nil || string(got) != "tiny" {
			t.Fatalf("%q %v", got, err)
		}
	})
	t.Run("bad digest withholds the tail", func(t *testing.T) {
		var out bytes.Buffer
		_, err := io.Copy(&out, newVerifyingReader(bytes.NewReader(data), strings.Repeat("0", 64), 0))
		if err == nil || !strings.Contains(err.Error(), "digest mismatch") {
			t.Fatalf("err %v", err)
		}
		if out.Len() > len(data)-holdBack {
			t.Fatalf("passed on %d bytes of %d; the last %d must be withheld", out.Len(), len(data), holdBack)
		}
	})
	t.Run("too big", func(t *testing.T) {
		_, err := io.ReadAll(newVerifyingReader(bytes.NewReader(data), digestOf(data), 1000))
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("source error", func(t *testing.T) {
		_, err := io.ReadAll(newVerifyingReader(iotest.TimeoutReader(bytes.NewReader(data)), digestOf(data), 0))
		if err == nil {
			t.Fatal("no error")
		}
	})
}

func TestWriteTarHostileTree(t *testing.T) {
	root := t.TempDir()
	must(t, os.WriteFile(filepath.Join(root, "a.txt"), []byte("alpha"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "sub", "deeper"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "sub", "deeper", "b.bin"), bytes.Repeat([]byte{7}, 200000), 0o600))
	must(t, os.Symlink("/etc/passwd", filepath.Join(root, "passwd-link")))
	must(t, os.Symlink("/etc", filepath.Join(root, "etc-link")))
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	long := strings.Repeat("n", 150)
	must(t, os.WriteFile(filepath.Join(root, long), []byte("long name"), 0o644))

	var buf bytes.Buffer
	ts, err := writeTar(context.Background(), &buf, root, "pre/", tarLimits{})
	must(t, err)
	if ts.Files != 3 {
		t.Fatalf("%d regular files, want 3", ts.Files)
	}
	seen := map[string]string{}
	amtest.TarEntries(t, &buf, func(h *tar.Header, tr io.Reader) {
		switch h.Typeflag {
		case tar.TypeReg:
			b, _ := io.ReadAll(tr)
			seen[h.Name] = string(b[:min(len(b), 10)])
		case tar.TypeSymlink:
			seen[h.Name] = "-> " + h.Linkname
		case tar.TypeDir:
			seen[h.Name] = "dir"
		default:
			t.Fatalf("unexpected entry type %c for %s", h.Typeflag, h.Name)
		}
	})
	want := map[string]string{
		"pre/": "dir", "pre/a.txt": "alpha", "pre/sub/": "dir", "pre/sub/deeper/": "dir",
		"pre/sub/deeper/b.bin": "\a\a\a\a\a\a\a\a\a\a", "pre/passwd-link": "-> /etc/passwd", "pre/etc-link": "-> /etc",
		"pre/" + long: "long name",
	}
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("entry %s: %q, want %q", k, seen[k], v)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("entries %v", seen)
	}
	// A cancelled context stops the walk.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := writeTar(ctx, io.Discard, root, "", tarLimits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// clearDir empties without following links.
	must(t, clearDir(root))
	if es, _ := os.ReadDir(root); len(es) != 0 {
		t.Fatalf("left %v", es)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatalf("clearDir followed a link: %v", err)
	}
}

func TestCheckPath(t *testing.T) {
	cases := map[string]bool{
		"/v2/slivers":                true,
		"/v2/slivers/abc":            true,
		"/v2/slivers/abc/image":      true,
		"/v1/fetchContainer/name":    true,
		"/v1/ping/":                  true,
		"/v2/slivers/..":             false,
		"/v2/slivers/a%2Fb":          false,
		"/v2/slivers/a;b/image":      false,
		"/v1/killContainer/a%20b":    false,
		"/v1/killContainer/a/b":      false,
		"/x/../v2":                   false,
		"/v2/slivers/ok/../../etc":   false,
		"/v2/slivers/%zz":            false,
		"/v1/startContainer/$(boom)": false,
	}
	for p, ok := range cases {
		u, err := url.Parse(p)
		if err != nil {
			// %zz does not parse: the server never sees it either.
			continue
		}
		if got := checkPath(u) == nil; got != ok {
			t.Errorf("%s: ok=%v, want %v", p, got, ok)
		}
	}
}

func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"/v2/slivers/abc/image", "/v1/fetchContainer/x", "/v2/slivers/..%2F", "/v1/killContainer/a;b", "//", "/v2/slivers/a%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		u, err := url.Parse(p)
		if err != nil {
			return
		}
		if checkPath(u) != nil {
			return
		}
		// Accepted: no segment may be "." or "..", and the sliver segment,
		// if any, must be a valid id once unescaped.
		segs := strings.Split(u.EscapedPath(), "/")
		for _, s := range segs {
			if s == ".." || s == "." {
				t.Fatalf("accepted %q with a dot segment", p)
			}
		}
		if len(segs) >= 4 && segs[1] == "v2" && segs[2] == "slivers" {
			id, _ := url.PathUnescape(segs[3])
			if agent.ValidID(id) != nil {
				t.Fatalf("accepted %q with id %q", p, id)
			}
		}
	})
}

// TestWriteTarSparse: a 64 GiB file with 8 bytes of data is archived with its
// holes left out, and both Go's reader and GNU tar get the file back.
func TestWriteTarSparse(t *testing.T) {
	root := t.TempDir()
	const size = 64 << 30
	f, err := os.Create(filepath.Join(root, "sparse.bin"))
	must(t, err)
	_, _ = f.WriteString("head")
	_, _ = f.WriteAt([]byte("tail"), size-4)
	f.Close()
	must(t, os.WriteFile(filepath.Join(root, "small.txt"), []byte("small"), 0o644))
	var buf bytes.Buffer
	ts, err := writeTar(context.Background(), &buf, root, "", tarLimits{})
	must(t, err)
	if ts.SparseFiles != 1 || ts.Files != 2 {
		t.Fatalf("stats %+v", ts)
	}
	t.Logf("a %d GiB sparse file archived in %d bytes", size>>30, buf.Len())
	if buf.Len() > 64<<10 {
		t.Fatalf("archive of %d bytes", buf.Len())
	}
	seen := map[string]int64{}
	amtest.TarEntries(t, bytes.NewReader(buf.Bytes()), func(h *tar.Header, tr io.Reader) {
		seen[h.Name] = h.Size
		if h.Name == "small.txt" {
			b, _ := io.ReadAll(tr)
			if string(b) != "small" {
				t.Fatalf("small.txt: %q", b)
			}
		}
	})
	if seen["sparse.bin"] != size || seen["small.txt"] != 5 {
		t.Fatalf("entries %v", seen)
	}
	if _, err := exec.LookPath("tar"); err == nil {
		out := t.TempDir()
		cmd := exec.Command("tar", "-x", "-C", out)
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("GNU tar: %v\n%s", err, b)
		}
		g, err := os.Open(filepath.Join(out, "sparse.bin"))
		must(t, err)
		defer g.Close()
		fi, err := g.Stat()
		must(t, err)
		head, tail := make([]byte, 4), make([]byte, 4)
		_, _ = g.ReadAt(head, 0)
		_, _ = g.ReadAt(tail, size-4)
		if fi.Size() != size || string(head) != "head" || string(tail) != "tail" {
			t.Fatalf("GNU tar extracted %d bytes, %q...%q", fi.Size(), head, tail)
		}
	}

	// Capped: the big entry is left out and a note says so.
	buf.Reset()
	must(t, os.WriteFile(filepath.Join(root, "dense.bin"), bytes.Repeat([]byte{1}, 100<<10), 0o644))
	ts, err = writeTar(context.Background(), &buf, root, "", tarLimits{MaxBytes: 64 << 10})
	must(t, err)
	if ts.SkippedFiles != 1 || int64(buf.Len()) > 64<<10 {
		t.Fatalf("capped: %+v, %d bytes", ts, buf.Len())
	}
	var names []string
	amtest.TarEntries(t, &buf, func(h *tar.Header, _ io.Reader) { names = append(names, h.Name) })
	if !slices.Contains(names, IncompleteNote) || slices.Contains(names, "dense.bin") {
		t.Fatalf("capped archive holds %v", names)
	}
}

// TestEnsureDataKeepsOldData: a /data that already holds files (a sliver
// from before quotas were enabled) is not mounted over.
func TestEnsureDataKeepsOldData(t *testing.T) {
	if why := DataQuotaUsable(); why != "" {
		t.Skip(why)
	}
	cfg := Config{StateDir: t.TempDir(), DataQuotaBytes: 16 << 20}
	must(t, cfg.defaults())
	s := &Service{cfg: cfg, st: store{root: cfg.StateDir}, log: cfg.Logger}
	dir := s.st.dataDir("old")
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "result.csv"), []byte("1,2\n"), 0o644))
	must(t, s.ensureData(context.Background(), "old", cfg.DataQuotaBytes))
	if m, _ := isMountPoint(dir); m {
		_ = s.releaseData("old")
		t.Fatal("a /data holding files was mounted over")
	}
	if _, err := os.Stat(filepath.Join(dir, "result.csv")); err != nil {
		t.Fatal(err)
	}
}
