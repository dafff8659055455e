package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/geniam/geniam/am"
)

// imageSource is where an image tar comes from, after the URL policy check.
type imageSource struct {
	url  string // http(s) URL, or "" for a file
	host string // the URL's host
	path string // local file, when files are allowed
}

// checkImageURL applies the agent's policy: http and https always; a local
// file (absolute path or file:// URL) only when AllowFileImages is set and,
// if FileImageDirs is not empty, only inside one of those directories.
func (s *Service) checkImageURL(raw string) (imageSource, error) {
	if strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, "file://") {
		p := strings.TrimPrefix(raw, "file://")
		if !s.cfg.AllowFileImages {
			return imageSource{}, am.Errorf(am.Forbidden, "fetch: local image files are not allowed on this agent")
		}
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			return imageSource{}, am.Errorf(am.BadArgs, "fetch: image path %q is not absolute", am.Clip(raw, 200))
		}
		if len(s.cfg.FileImageDirs) > 0 {
			ok := false
			for _, d := range s.cfg.FileImageDirs {
				if rel, err := filepath.Rel(filepath.Clean(d), p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
					ok = true
				}
			}
			if !ok {
				return imageSource{}, am.Errorf(am.Forbidden, "fetch: image path %q is outside the allowed directories", am.Clip(raw, 200))
			}
		}
		return imageSource{path: p}, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return imageSource{}, am.Errorf(am.BadArgs, "fetch: image url %q must be http(s)", am.Clip(raw, 200))
	}
	if err := s.policy.checkURL(u); err != nil {
		return imageSource{}, am.Errorf(am.Forbidden, "fetch: %s", err)
	}
	return imageSource{url: u.String(), host: u.Hostname()}, nil
}

// open returns the tar stream and its announced size (-1 if unknown).
func (s *Service) open(ctx context.Context, src imageSource) (io.ReadCloser, int64, error) {
	if src.path != "" {
		f, err := os.Open(src.path)
		if err != nil {
			return nil, 0, fmt.Errorf("opening image file: %w", err)
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, 0, fmt.Errorf("image file %s is not a regular file", src.path)
		}
		return f, fi.Size(), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := s.policy.client(src.host).Do(req)
	if err != nil {
		return nil, 0, fetchError(ctx, src.host, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		// The status code only: never the body or the reason phrase of
		// whatever answered.
		return nil, 0, fmt.Errorf("downloading image: %s answered HTTP %d", am.Clip(src.host, 100), resp.StatusCode)
	}
	return resp.Body, resp.ContentLength, nil
}

// holdBack is how many trailing bytes the verifying reader keeps until the
// digest is checked. It is larger than a tar's end-of-archive marker (two
// 512-byte zero blocks, padded to a 10 KiB record), so the engine can never
// see a complete archive whose digest turns out wrong: it sees a broken
// stream instead and loads nothing.
const holdBack = 64 << 10

// verifyingReader passes src through while hashing it, withholding the last
// holdBack bytes until src ends and the SHA-256 matches want ("" disables the
// check). It also enforces a size limit. Memory is constant (about holdBack
// plus one read).
type verifyingReader struct {
	src  io.Reader
	h    hash.Hash
	want string
	max  int64

	buf  []byte // buf[off:] was read from src and not yet passed on
	off  int
	done bool // src ended and the digest matched

	// The engine client reads in its own goroutine, so what the fetch
	// reports afterwards is read under a lock.
	mu  sync.Mutex
	n   int64 // bytes read from src
	err error // sticky failure
}

// result returns the bytes read so far and the failure, if any.
func (v *verifyingReader) result() (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.n, v.err
}

func (v *verifyingReader) fail(err error) (int, error) {
	v.mu.Lock()
	v.err = err
	v.mu.Unlock()
	return 0, err
}

func newVerifyingReader(src io.Reader, wantHex string, max int64) *verifyingReader {
	return &verifyingReader{src: src, h: sha256.New(), want: wantHex, max: max, buf: make([]byte, 0, holdBack+64<<10)}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if _, err := v.result(); err != nil {
		return 0, err
	}
	for !v.done && len(v.buf)-v.off <= holdBack {
		if v.off > 0 { // compact: at most holdBack bytes move, once per refill
			v.buf = v.buf[:copy(v.buf, v.buf[v.off:])]
			v.off = 0
		}
		chunk := v.buf[len(v.buf):cap(v.buf)]
		n, err := v.src.Read(chunk)
		v.h.Write(chunk[:n])
		v.buf = v.buf[:len(v.buf)+n]
		v.mu.Lock()
		v.n += int64(n)
		total := v.n
		v.mu.Unlock()
		if v.max > 0 && total > v.max {
			return v.fail(fmt.Errorf("image is larger than the limit of %d bytes", v.max))
		}
		if err == io.EOF {
			got := hex.EncodeToString(v.h.Sum(nil))
			if v.want != "" && got != v.want {
				// Not the digest we got: it would tell the experimenter the
				// hash of whatever answered.
				return v.fail(fmt.Errorf("image digest mismatch: the tar's sha256 is not %s", v.want))
			}
			v.done = true
		} else if err != nil {
			return v.fail(fmt.Errorf("reading image: %w", err))
		}
	}
	avail := len(v.buf) - v.off
	if !v.done {
		avail -= holdBack
	}
	if avail == 0 {
		return 0, io.EOF // only reachable when done
	}
	n := copy(p, v.buf[v.off:v.off+avail])
	v.off += n
	return n, nil
}

// Digest returns the hex SHA-256 of everything read so far.
func (v *verifyingReader) Digest() string { return hex.EncodeToString(v.h.Sum(nil)) }
