package agent

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// writeTar streams the tree under root to w as a tar archive, with entry
// names prefix+path-relative-to-root. Memory use is constant whatever the
// size of the tree: each file is copied through a fixed buffer.
//
// The tree is written by the experimenter's container, so it is hostile:
// symbolic links are archived as links and never followed (a link to
// /etc/shadow stays a link), files are opened with O_NOFOLLOW|O_NONBLOCK and
// checked to be regular after opening (a file swapped for a FIFO or a link
// between the walk and the open is skipped, not read), and devices, FIFOs and
// sockets are skipped. A file that changes size while it is read is cut or
// zero-padded to the size in its header so the archive stays well formed.
// Entries that vanish during the walk are skipped.
func writeTar(ctx context.Context, w io.Writer, root, prefix string) (files int, err error) {
	tw := tar.NewWriter(w)
	buf := make([]byte, 64<<10)
	if prefix != "" {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: prefix, Mode: 0o755, Format: tar.FormatPAX}); err != nil {
			return 0, err
		}
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, werr error) error {
		if werr != nil {
			if errors.Is(werr, fs.ErrNotExist) && path != root {
				return nil
			}
			return werr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		name := prefix + filepath.ToSlash(rel)
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			h, err := tar.FileInfoHeader(info, "")
			if err != nil {
				return err
			}
			h.Name, h.Format = name+"/", tar.FormatPAX
			return tw.WriteHeader(h)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			} else if err != nil {
				return err
			}
			h, err := tar.FileInfoHeader(info, target)
			if err != nil {
				return err
			}
			h.Name, h.Format = name, tar.FormatPAX
			return tw.WriteHeader(h)
		case info.Mode().IsRegular():
			if err := copyRegular(tw, path, name, buf); err != nil {
				return err
			}
			files++
			return nil
		default:
			return nil // device, FIFO, socket: not data
		}
	})
	if err != nil {
		return files, err
	}
	return files, tw.Close()
}

func copyRegular(tw *tar.Writer, path, name string, buf []byte) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
			return nil // gone, or swapped for a link since the walk saw it
		}
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return nil
	}
	h, err := tar.FileInfoHeader(info, "")
	if err != nil {
		return err
	}
	h.Name, h.Format = name, tar.FormatPAX
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.CopyBuffer(tw, io.LimitReader(f, h.Size), buf)
	if err != nil {
		return fmt.Errorf("archiving %s: %w", name, err)
	}
	// The file shrank while we read it: pad with zeros to the promised size.
	for n < h.Size {
		clear(buf)
		k := min(int64(len(buf)), h.Size-n)
		if _, err := tw.Write(buf[:k]); err != nil {
			return err
		}
		n += k
	}
	return nil
}

// clearDir removes everything inside dir but keeps dir itself, which may be
// bind-mounted into a running container. Links are removed, not followed.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
