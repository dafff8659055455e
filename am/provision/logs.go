package provision

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// The start command's whole output (stdout and stderr in the order they
// were written) is downloaded like /data and through the same handler and
// authorization: POST the slice credential to /data/<sliver name>.log. It
// is read from the agent while the sliver lives, and archived next to the
// /data archive (<archive_dir>/<name>.log) by geniam_fetch_data, Delete and
// expiry, for the same retention.

// maxLogBytes bounds the output copied from an agent (the engine's own log
// rotation usually keeps it far smaller).
const maxLogBytes = 1 << 30

// LogsArchivePath is where the output of a sliver is archived.
func (p *Provisioner) LogsArchivePath(sliverURN string) string {
	return filepath.Join(p.cfg.ArchiveDir, AgentID(sliverURN)+".log")
}

// LogsURL is where a sliver's output is downloaded ("" without a public URL).
func (p *Provisioner) LogsURL(sliverURN string) string {
	if p.cfg.PublicURL == "" {
		return ""
	}
	return p.cfg.PublicURL + "data/" + AgentID(sliverURN) + ".log"
}

// fetchLogs copies the container's output from the agent to dst (through a
// temporary file renamed when whole). SEARCHFAILED when the sliver never had
// a container.
func (p *Provisioner) fetchLogs(ctx context.Context, c *agent.Client, id, dst string) (int64, error) {
	rc, err := c.Logs(ctx, id, "all")
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+id+"-log-*.part")
	if err != nil {
		return 0, am.Wrap(am.ServerError, err, "logs: cannot write in %s", filepath.Dir(dst))
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, io.LimitReader(rc, maxLogBytes))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, am.Wrap(am.Unavailable, err, "logs: the transfer of %s's output from the agent broke", id)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return 0, am.Wrap(am.ServerError, err, "logs: keeping %s", dst)
	}
	return n, nil
}

// archiveLogs keeps the output next to the /data archive; a sliver that
// never had a container has none. Only a transient failure holds the job
// up (it is retried): the output must never keep /data from being archived
// or a sliver from being torn down (an older agent without logs/all).
func (p *Provisioner) archiveLogs(ctx context.Context, c *agent.Client, sliverURN, id string) error {
	_, err := p.fetchLogs(ctx, c, id, p.LogsArchivePath(sliverURN))
	switch {
	case err == nil, am.CodeOf(err) == am.SearchFailed:
		return nil
	case transient(err):
		return err
	}
	p.log.Warn("provisioner: the output could not be archived; /data still is", "sliver", sliverURN, "err", err)
	return nil
}

// serveLogs answers an authorized POST /data/<name>.log: live from the
// agent, else the archive.
func (p *Provisioner) serveLogs(ctx context.Context, w http.ResponseWriter, r *http.Request, s *am.Sliver, urn, name string) error {
	filename := name + ".log"
	w.Header().Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	if s != nil && s.Allocation == am.Provisioned {
		url, err := p.st.AgentURL(ctx, s.NodeName)
		if err != nil {
			return err
		}
		tmp := filepath.Join(p.cfg.ArchiveDir, "."+name+"-live-"+time.Now().UTC().Format("20060102T150405.000000000")+".log")
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
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Geniam-Data-Source", source)
	http.ServeContent(w, r, filename, st.ModTime(), f)
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// logsName splits "<name>.log" off a /data/ path.
func logsName(rest string) (string, bool) {
	name, ok := strings.CutSuffix(rest, ".log")
	return name, ok && name != "" && !strings.Contains(name, "/")
}
