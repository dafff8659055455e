package node

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"sync"
)

// A `docker save` tar may be compressed, and so may each layer inside it:
// the engine accepts both, and expands them. A 5 MB tar of a gzip layer of
// zeros loaded as 2.15 GB, past a size cap that counted only the download.
// unpackGuard counts, while the bytes stream into the engine, what the image
// will cost there: each layer's files at their full size (a sparse file in a
// layer is written out whole), everything else at its uncompressed size. It
// sees every byte before the engine does, so the engine never receives more
// than the limit allows: past it, the stream fails and nothing is loaded.

// errUnpackedTooLarge is the guard's failure.
type errUnpackedTooLarge struct{ limit int64 }

func (e errUnpackedTooLarge) Error() string {
	return fmt.Sprintf("the image expands to more than the limit of %d bytes (max_image_unpacked_bytes)", e.limit)
}

// unpackGuard passes src through and feeds a copy to the counter, in step:
// a Read returns only after the counter has taken the bytes.
type unpackGuard struct {
	src   io.Reader
	pw    *io.PipeWriter
	done  chan struct{}
	limit int64

	mu      sync.Mutex
	counted int64
	err     error // the counter's verdict: errUnpackedTooLarge or a format error
}

func newUnpackGuard(src io.Reader, limit int64) *unpackGuard {
	pr, pw := io.Pipe()
	g := &unpackGuard{src: src, pw: pw, done: make(chan struct{}), limit: limit}
	go func() {
		defer close(g.done)
		err := g.countImage(pr)
		if err != nil {
			g.mu.Lock()
			g.err = err
			g.mu.Unlock()
			pr.CloseWithError(err) // the next write fails at once
			return
		}
		_, _ = io.Copy(io.Discard, pr) // trailing bytes after the tar
	}()
	return g
}

func (g *unpackGuard) verdict() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *unpackGuard) Read(p []byte) (int, error) {
	if err := g.verdict(); err != nil {
		return 0, err
	}
	n, err := g.src.Read(p)
	if n > 0 {
		if _, werr := g.pw.Write(p[:n]); werr != nil {
			if v := g.verdict(); v != nil {
				return 0, v
			}
			return 0, werr
		}
		if v := g.verdict(); v != nil {
			return 0, v
		}
	}
	if err == io.EOF {
		g.pw.Close()
		<-g.done
		if v := g.verdict(); v != nil {
			return 0, v
		}
	}
	return n, err
}

// Close stops the counter (the fetch ended early).
func (g *unpackGuard) Close() {
	g.pw.CloseWithError(io.ErrClosedPipe)
	<-g.done
}

func (g *unpackGuard) add(n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.counted += n
	if g.counted > g.limit {
		return errUnpackedTooLarge{g.limit}
	}
	return nil
}

// decompressed returns r uncompressed when it starts with a gzip or bzip2
// header, r itself otherwise; xz and zstd, which the standard library
// cannot read, are refused.
func decompressed(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(head, []byte("BZh")):
		return bzip2.NewReader(br), nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return nil, errors.New("xz-compressed images or layers are not accepted: use gzip or an uncompressed docker save tar")
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil, errors.New("zstd-compressed images or layers are not accepted: use gzip or an uncompressed docker save tar")
	}
	return br, nil
}

// countImage reads the (possibly compressed) image tar; every entry counts
// as a layer (countLayer) when it is one, else at its size.
func (g *unpackGuard) countImage(r io.Reader) error {
	r, err := decompressed(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		} else if err != nil {
			return nil // not a tar: the engine will say so
		}
		if err := g.add(512); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg || h.Size == 0 {
			continue
		}
		if err := g.countLayer(tr); err != nil {
			return err
		}
	}
}

// countLayer counts one entry of the image tar. A layer (a tar, perhaps
// compressed) counts as the sum of its files' full sizes; anything else
// (JSON, or a blob that is no tar) at its uncompressed size.
func (g *unpackGuard) countLayer(entry io.Reader) error {
	r, err := decompressed(entry)
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 1024)
	if head, _ := br.Peek(512); len(head) == 512 && isTarHeader(head) {
		tr := tar.NewReader(br)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			} else if err != nil {
				break // a broken layer: the engine refuses it
			}
			if err := g.add(512 + h.Size); err != nil {
				return err
			}
		}
	}
	// Whatever follows (or the whole entry, if it is no tar) at its size.
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			if aerr := g.add(int64(n)); aerr != nil {
				return aerr
			}
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// isTarHeader reports whether b is a tar header block (ustar magic, or a
// valid old-style checksum).
func isTarHeader(b []byte) bool {
	if bytes.Equal(b[257:262], []byte("ustar")) {
		return true
	}
	var sum int64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	var want int64
	for _, c := range bytes.TrimRight(bytes.TrimSpace(b[148:156]), "\x00 ") {
		if c < '0' || c > '7' {
			return false
		}
		want = want*8 + int64(c-'0')
	}
	return sum == want && sum != 8*' '
}
