package node

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The sliver's /data is written by the experimenter's container while the
// agent reads it as root, so every path under it is hostile: a directory
// can be swapped for a symbolic link to /etc between two system calls.
// Everything here therefore works on open directory descriptors, one name at
// a time, with O_NOFOLLOW (or AT_SYMLINK_NOFOLLOW) on every name: no symbolic
// link is ever followed at any level, so nothing outside the directory can
// be reached whatever the container does, and there is no check-then-open
// window to race. (os.Root would also stay inside the directory, but it
// follows links that point inside it; here not even those are followed.)

// maxDataDepth bounds the directory nesting the walk follows (each level
// holds one descriptor open). Deeper trees are cut, and the archive says so.
const maxDataDepth = 256

// tarLimits bound one archive.
type tarLimits struct {
	// MaxBytes is the most the archive may hold (headers and data, before
	// any compression); 0 is no limit. Entries that would not fit are left
	// out, and a note at the end of the archive says how many and why.
	MaxBytes int64
}

// tarStats is what writeTar did.
type tarStats struct {
	Files        int   // regular files archived
	Bytes        int64 // bytes of the tar stream
	SparseFiles  int   // files archived with their holes left out
	SkippedFiles int   // entries left out because of MaxBytes or maxDataDepth
}

// writeTar streams the tree under root to w as a tar archive, with entry
// names prefix+path-relative-to-root. Memory use is constant whatever the
// size of the tree: each file is copied through a fixed buffer.
//
// Symbolic links are archived as links (a link to /etc/shadow stays a link),
// devices, FIFOs and sockets are skipped, and files are opened with
// O_NOFOLLOW|O_NONBLOCK beneath the descriptor of their directory and
// checked to be regular after opening. Files with holes are archived in the
// PAX sparse format (GNU 1.0, read by GNU tar, bsdtar and Go): a 64 GiB
// sparse file costs the size of its data, not 64 GiB of zeros. A file that
// changes size while it is read is cut or zero-padded to the size in its
// header so the archive stays well formed. Entries that vanish during the
// walk are skipped.
func writeTar(ctx context.Context, w io.Writer, root, prefix string, lim tarLimits) (tarStats, error) {
	cw := &countingWriter{w: w}
	t := &tarWalk{ctx: ctx, w: cw, tw: tar.NewWriter(cw), lim: lim, buf: make([]byte, 64<<10), prefix: prefix}
	dfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return t.st, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	if prefix != "" {
		if err := t.header(&tar.Header{Typeflag: tar.TypeDir, Name: prefix, Mode: 0o755, ModTime: time.Now()}); err != nil {
			unix.Close(dfd)
			return t.st, err
		}
	}
	err = t.dir(dfd, "", 0) // closes dfd
	if err == nil && t.st.SkippedFiles > 0 {
		err = t.note()
	}
	if err == nil {
		err = t.tw.Close()
	}
	t.st.Bytes = cw.n
	return t.st, err
}

type tarWalk struct {
	ctx    context.Context
	w      *countingWriter
	tw     *tar.Writer
	lim    tarLimits
	buf    []byte
	prefix string
	st     tarStats
	cut    string // why entries were left out (for the note)
}

// fits reports whether an entry of dataBytes more would stay within
// MaxBytes (with room for its headers and the closing note); an entry that
// does not is counted as left out.
func (t *tarWalk) fits(dataBytes int64) bool {
	if t.lim.MaxBytes <= 0 {
		return true
	}
	const headroom = 8 << 10 // PAX and ustar headers, padding, the note, the end blocks
	if t.w.n+dataBytes+headroom <= t.lim.MaxBytes {
		return true
	}
	t.st.SkippedFiles++
	return false
}

func (t *tarWalk) header(h *tar.Header) error {
	h.Format = tar.FormatPAX
	return t.tw.WriteHeader(h)
}

// dir archives the entries of the open directory dfd (whose archive name is
// rel, "" for the root) and closes dfd.
func (t *tarWalk) dir(dfd int, rel string, depth int) error {
	d := os.NewFile(uintptr(dfd), rel)
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, name := range names {
			if err := t.ctx.Err(); err != nil {
				return err
			}
			if err := t.entry(dfd, name, path.Join(rel, name), depth); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading directory %q: %w", rel, err)
		}
	}
}

func (t *tarWalk) entry(dfd int, name, rel string, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("stat %q: %w", rel, err)
	}
	h := &tar.Header{Name: t.prefix + rel, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix())}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if depth+1 >= maxDataDepth {
			t.st.SkippedFiles++
			t.cut = fmt.Sprintf("directories nested deeper than %d levels are not archived", maxDataDepth)
			return nil
		}
		sub, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT || err == unix.ELOOP || err == unix.ENOTDIR {
			return nil // gone, or swapped for a link or a file since the stat
		} else if err != nil {
			return fmt.Errorf("opening directory %q: %w", rel, err)
		}
		if !t.fits(0) {
			unix.Close(sub)
			return nil
		}
		h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		if err := t.header(h); err != nil {
			unix.Close(sub)
			return err
		}
		return t.dir(sub, rel, depth+1)
	case unix.S_IFLNK:
		target, err := readlinkat(dfd, name)
		if err == unix.ENOENT || err == unix.EINVAL {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading link %q: %w", rel, err)
		}
		if !t.fits(int64(len(target))) {
			return nil
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
		return t.header(h)
	case unix.S_IFREG:
		return t.regular(dfd, name, h)
	default:
		return nil // device, FIFO, socket: not data
	}
}

func readlinkat(dfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(dfd, name, b)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(b[:n]), nil
		}
		if size >= 64<<10 {
			return "", unix.ENAMETOOLONG
		}
	}
}

func (t *tarWalk) regular(dfd int, name string, h *tar.Header) error {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err == unix.ENOENT || err == unix.ELOOP || err == unix.ENXIO || err == unix.EWOULDBLOCK {
		return nil // gone, or swapped for a link, a socket or a FIFO since the stat
	} else if err != nil {
		return fmt.Errorf("opening %q: %w", h.Name, err)
	}
	f := os.NewFile(uintptr(fd), h.Name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	h.Typeflag, h.Size = tar.TypeReg, st.Size
	h.Mode, h.ModTime = int64(st.Mode&0o7777), time.Unix(st.Mtim.Unix())
	segs, sparse := dataSegments(fd, st.Size)
	if sparse {
		return t.sparse(f, h, segs)
	}
	if !t.fits(h.Size) {
		return nil
	}
	if err := t.header(h); err != nil {
		return err
	}
	if err := t.copyRange(f, 0, h.Size); err != nil {
		return err
	}
	t.st.Files++
	return nil
}

// copyRange copies n bytes of f from off into the current entry, padding
// with zeros if the file shrank meanwhile.
func (t *tarWalk) copyRange(f *os.File, off, n int64) error {
	return copyRaw(t.tw, f, off, n, t.buf)
}

// note ends an archive that was cut with a file that says so, so nobody
// mistakes it for the whole of /data.
func (t *tarWalk) note() error {
	why := t.cut
	if why == "" {
		why = fmt.Sprintf("the archive would be larger than this sliver's archive limit of %d bytes", t.lim.MaxBytes)
	}
	msg := fmt.Sprintf("This archive of /data is INCOMPLETE: %d entries were left out because %s.\n", t.st.SkippedFiles, why)
	if err := t.header(&tar.Header{Typeflag: tar.TypeReg, Name: t.prefix + IncompleteNote, Mode: 0o444, Size: int64(len(msg)), ModTime: time.Now()}); err != nil {
		return err
	}
	_, err := io.WriteString(t.tw, msg)
	return err
}

// IncompleteNote is the file at the end of a /data archive that had to
// leave entries out.
const IncompleteNote = "GENIAM-ARCHIVE-INCOMPLETE.txt"

// segment is one run of data in a sparse file.
type segment struct{ off, n int64 }

// maxSegments bounds the sparse map held in memory for one file (16 bytes a
// segment). A file with more data runs is archived with its tail dense.
const maxSegments = 1 << 16

// dataSegments asks the filesystem where the data of the open file lies
// (SEEK_DATA/SEEK_HOLE). sparse is false when the file has no holes, or the
// filesystem cannot tell.
func dataSegments(fd int, size int64) (segs []segment, sparse bool) {
	var total int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole up to the end
		} else if err != nil {
			return nil, false
		}
		if start >= size {
			break
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, false
		}
		end = min(end, size)
		if len(segs) == maxSegments-1 {
			end = size // too fragmented: the rest is archived dense
		}
		segs = append(segs, segment{start, end - start})
		total += end - start
		off = end
	}
	if total == size {
		return nil, false
	}
	// GNU tar marks the end of a file that ends in a hole with an empty
	// segment at its size; readers need it to know the real size.
	if len(segs) == 0 || segs[len(segs)-1].off+segs[len(segs)-1].n < size {
		segs = append(segs, segment{size, 0})
	}
	return segs, true
}

// sparse writes a file with holes in the PAX 1.0 sparse format: the entry
// holds a text map (count, then offset and length of each data run, padded
// to 512 bytes) followed by the data runs only. archive/tar cannot write
// this (golang.org/issue/22735), so the two headers are written here and the
// body through the tar.Writer as a regular entry of the encoded size.
func (t *tarWalk) sparse(f *os.File, h *tar.Header, segs []segment) error {
	smap := strconv.AppendInt(nil, int64(len(segs)), 10)
	smap = append(smap, '\n')
	var data int64
	for _, s := range segs {
		smap = strconv.AppendInt(smap, s.off, 10)
		smap = append(smap, '\n')
		smap = strconv.AppendInt(smap, s.n, 10)
		smap = append(smap, '\n')
		data += s.n
	}
	if pad := len(smap) % 512; pad != 0 {
		smap = append(smap, make([]byte, 512-pad)...)
	}
	encoded := int64(len(smap)) + data
	if !t.fits(encoded) {
		return nil
	}
	// archive/tar writes no sparse entries (golang.org/issue/22735), so the
	// entry is written here, between two of its entries: Flush pads the
	// previous one, then the PAX header, the ustar header, the map and the
	// data runs go out as whole 512-byte blocks.
	if err := t.tw.Flush(); err != nil {
		return err
	}
	hdrs := sparseHeaders(h, encoded)
	if _, err := t.w.Write(hdrs); err != nil {
		return err
	}
	if _, err := t.w.Write(smap); err != nil {
		return err
	}
	for _, s := range segs {
		if err := copyRaw(t.w, f, s.off, s.n, t.buf); err != nil {
			return err
		}
	}
	if pad := data % 512; pad != 0 {
		clear(t.buf[:512])
		if _, err := t.w.Write(t.buf[:512-pad]); err != nil {
			return err
		}
	}
	t.st.Files++
	t.st.SparseFiles++
	return nil
}

// sparseHeaders encodes the PAX extended header and the ustar header of a
// sparse entry in GNU's 1.0 format: the real name and size are PAX records
// (GNU.sparse.name, GNU.sparse.realsize), the ustar name follows GNU tar's
// convention (dir/GNUSparseFile.0/base) so an old reader extracts a
// recognisable file, and the size is that of the map plus the data runs.
func sparseHeaders(h *tar.Header, encoded int64) []byte {
	dir, base := path.Split(h.Name)
	recs := paxRecord(nil, "GNU.sparse.major", "1")
	recs = paxRecord(recs, "GNU.sparse.minor", "0")
	recs = paxRecord(recs, "GNU.sparse.name", h.Name)
	recs = paxRecord(recs, "GNU.sparse.realsize", strconv.FormatInt(h.Size, 10))
	recs = paxRecord(recs, "size", strconv.FormatInt(encoded, 10))
	out := ustarHeader("PaxHeaders.0/"+base, 'x', 0o644, 0, 0, int64(len(recs)), h.ModTime.Unix())
	out = append(out, recs...)
	if pad := len(recs) % 512; pad != 0 {
		out = append(out, make([]byte, 512-pad)...)
	}
	return append(out, ustarHeader(path.Join(dir, "GNUSparseFile.0", base), '0', h.Mode, int64(h.Uid), int64(h.Gid), encoded, h.ModTime.Unix())...)
}

// paxRecord appends "<len> key=value\n", where len counts the whole record.
func paxRecord(b []byte, k, v string) []byte {
	n := len(k) + len(v) + 3 // space, '=', newline
	l := n + len(strconv.Itoa(n))
	if len(strconv.Itoa(l)) > len(strconv.Itoa(n)) {
		l++
	}
	return fmt.Appendf(b, "%d %s=%s\n", l, k, v)
}

// ustarHeader encodes one 512-byte ustar header block. A name longer than
// the field is cut (the PAX records carry the real one); a number too large
// for its octal field is written in base-256, as GNU tar and Go read it.
func ustarHeader(name string, typ byte, mode, uid, gid, size, mtime int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	octal := func(f []byte, v int64) {
		s := strconv.FormatInt(v, 8)
		if v < 0 || len(s) > len(f)-1 {
			for i := len(f) - 1; i > 0; i-- { // base-256, big-endian
				f[i] = byte(v)
				v >>= 8
			}
			f[0] = 0x80
			return
		}
		for i := range f[:len(f)-1] {
			f[i] = '0'
		}
		copy(f[len(f)-1-len(s):], s)
	}
	octal(b[100:108], mode)
	octal(b[108:116], uid)
	octal(b[116:124], gid)
	octal(b[124:136], size)
	octal(b[136:148], mtime)
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// copyRaw copies n bytes of f from off to w, zero-padding a short read (the
// file shrank while it was read) so the entry keeps the size in its header.
func copyRaw(w io.Writer, f *os.File, off, n int64, buf []byte) error {
	got, err := io.CopyBuffer(w, io.NewSectionReader(f, off, n), buf)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", f.Name(), err)
	}
	for got < n {
		clear(buf)
		k := min(int64(len(buf)), n-got)
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		got += k
	}
	return nil
}

// countingWriter counts what passes through.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// clearDir removes everything inside dir but keeps dir itself, which may be
// bind-mounted into a running container. It works beneath a descriptor of
// dir (os.Root), so a link planted inside is removed, never followed, and no
// swap during the removal can reach outside.
func clearDir(dir string) error {
	r, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer r.Close()
	d, err := r.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(1024)
		for _, name := range names {
			if err := r.RemoveAll(name); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}
