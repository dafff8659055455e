package provision

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// The start command's whole output is downloaded like /data and through
// the same handler and authorization: POST the slice credential to
// /data/<sliver name>/logs.tar. The tar holds stdout.log and stderr.log;
// it is fetched from the agent while the sliver lives, and archived next to
// the /data archive (<archive_dir>/<name>.logs.tar) by geniam_fetch_data,
// Delete and expiry, for the same retention.

// maxLogBytes bounds each stream copied from an agent (the engine's own log
// rotation usually keeps them far smaller).
const maxLogBytes = 1 << 30

// LogsArchivePath is where the output of a sliver is archived.
func (p *Provisioner) LogsArchivePath(sliverURN string) string {
	return filepath.Join(p.cfg.ArchiveDir, AgentID(sliverURN)+".logs.tar")
}

// LogsURL is where a sliver's output is downloaded ("" without a public URL).
func (p *Provisioner) LogsURL(sliverURN string) string {
	if p.cfg.PublicURL == "" {
		return ""
	}
	return p.cfg.PublicURL + "data/" + AgentID(sliverURN) + "/logs.tar"
}

// fetchLogs copies the container's stdout and stderr from the agent into a
// tar at dst (through a temporary file renamed when whole). SEARCHFAILED
// when the sliver never had a container.
func (p *Provisioner) fetchLogs(ctx context.Context, c *agent.Client, id, dst string) (int64, error) {
	dir := filepath.Dir(dst)
	var parts []*os.File
	defer func() {
		for _, f := range parts {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	for _, stream := range []string{"stdout", "stderr"} {
		rc, err := c.Logs(ctx, id, stream)
		if err != nil {
			return 0, err
		}
		f, err := os.CreateTemp(dir, "."+id+"-"+stream+"-*.part")
		if err != nil {
			rc.Close()
			return 0, am.Wrap(am.ServerError, err, "logs: cannot write in %s", dir)
		}
		parts = append(parts, f)
		_, err = io.Copy(f, io.LimitReader(rc, maxLogBytes))
		rc.Close()
		if err != nil {
			return 0, am.Wrap(am.Unavailable, err, "logs: the transfer of %s's %s from the agent broke", id, stream)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+id+"-logs-*.part")
	if err != nil {
		return 0, am.Wrap(am.ServerError, err, "logs: cannot write in %s", dir)
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	now := time.Now()
	for i, name := range []string{"stdout.log", "stderr.log"} {
		f := parts[i]
		size, err := f.Seek(0, io.SeekCurrent)
		if err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: now, Format: tar.FormatPAX})
		}
		if err == nil {
			_, err = io.CopyN(tw, f, size)
		}
		if err != nil {
			tmp.Close()
			return 0, am.Wrap(am.ServerError, err, "logs: writing the tar of %s", id)
		}
	}
	err = tw.Close()
	if err == nil {
		err = tmp.Sync()
	}
	n, _ := tmp.Seek(0, io.SeekCurrent)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return 0, am.Wrap(am.ServerError, err, "logs: keeping %s", dst)
	}
	return n, nil
}

// archiveLogs keeps the output next to the /data archive; a sliver that
// never had a container has none.
func (p *Provisioner) archiveLogs(ctx context.Context, c *agent.Client, sliverURN, id string) error {
	_, err := p.fetchLogs(ctx, c, id, p.LogsArchivePath(sliverURN))
	if am.CodeOf(err) == am.SearchFailed {
		return nil
	}
	return err
}

// serveLogs answers an authorized POST /data/<name>/logs.tar: live from
// the agent, else the archive.
func (p *Provisioner) serveLogs(ctx context.Context, w http.ResponseWriter, r *http.Request, s *am.Sliver, urn, name string) error {
	filename := name + ".logs.tar"
	w.Header().Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	if s != nil && s.Allocation == am.Provisioned {
		url, err := p.st.AgentURL(ctx, s.NodeName)
		if err != nil {
			return err
		}
		tmp := filepath.Join(p.cfg.ArchiveDir, fmt.Sprintf(".%s-live-%d.logs.tar", name, time.Now().UnixNano()))
		defer os.Remove(tmp)
		if _, err := p.fetchLogs(ctx, p.client(url), name, tmp); err == nil {
			return serveFile(w, r, tmp, filename, "live "+s.NodeName)
		} else if !fileExists(p.LogsArchivePath(urn)) {
			return err
		}
	}
	path := p.LogsArchivePath(urn)
	st, err := os.Stat(path)
	if err != nil {
		return &am.Err{Code: am.SearchFailed, Msg: "sliver " + name + " has no output here (it never ran, or its archive's retention has ended)"}
	}
	return serveFile(w, r, path, filename, "archive "+st.ModTime().UTC().Format(time.RFC3339))
}

func serveFile(w http.ResponseWriter, r *http.Request, path, filename, source string) error {
	f, err := os.Open(path)
	if err != nil {
		return am.Wrap(am.SearchFailed, err, "%s is gone", filename)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return am.Wrap(am.ServerError, err, "%s", filename)
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("X-Geniam-Data-Source", source)
	http.ServeContent(w, r, filename, st.ModTime(), f)
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// logsName splits "<name>/logs.tar" off a /data/ path.
func logsName(rest string) (string, bool) {
	name, ok := strings.CutSuffix(rest, "/logs.tar")
	return name, ok && !strings.Contains(name, "/")
}
