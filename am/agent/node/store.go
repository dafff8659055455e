package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/geniam/geniam/am/agent"
)

// record is what the agent remembers of one sliver, one JSON file per sliver
// (<state>/slivers/<id>.json), written atomically (temporary file, fsync,
// rename, fsync of the directory), so a crash leaves the old or the new
// version, never half of one.
type record struct {
	ID        string `json:"id"`
	SliceURN  string `json:"slice_urn,omitempty"`
	SliverURN string `json:"sliver_urn,omitempty"`
	Aggregate string `json:"aggregate,omitempty"` // LabelAggregate

	Image imageRecord `json:"image"`

	Spec             *agent.StartRequest `json:"spec,omitempty"` // what the container was started with
	Network          string              `json:"network,omitempty"`
	ContainerID      string              `json:"container_id,omitempty"`
	StartError       string              `json:"start_error,omitempty"`
	StoppedByRequest bool                `json:"stopped_by_request,omitempty"`
	Deadline         time.Time           `json:"deadline,omitzero"`
	TimeLimitKilled  bool                `json:"time_limit_killed,omitempty"`
	IdleStoppedAt    time.Time           `json:"idle_stopped_at,omitzero"` // stopped by the idle policy (idle.go)
	Adopted          bool                `json:"adopted,omitempty"`
	// LinksPid is the container process whose namespace has the links;
	// another pid (the engine restarted the container) means attach again.
	LinksPid int `json:"links_pid,omitempty"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

type imageRecord struct {
	URL        string    `json:"url,omitempty"`
	SHA256     string    `json:"sha256,omitempty"`
	Verified   bool      `json:"verified,omitempty"`
	ID         string    `json:"id,omitempty"`
	State      string    `json:"state"`
	Error      string    `json:"error,omitempty"`
	Bytes      int64     `json:"bytes,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// store lays out the agent's directory:
//
//	<root>/slivers/<id>.json      the record
//	<root>/slivers/<id>/data/     bound at /data in the container
//	<root>/slivers/<id>/geni/     bound read-only at /geni (identity files)
type store struct {
	root string
}

func (s store) sliversDir() string          { return filepath.Join(s.root, "slivers") }
func (s store) recordPath(id string) string { return filepath.Join(s.sliversDir(), id+".json") }
func (s store) sliverDir(id string) string  { return filepath.Join(s.sliversDir(), id) }
func (s store) dataDir(id string) string    { return filepath.Join(s.sliverDir(id), "data") }
func (s store) geniDir(id string) string    { return filepath.Join(s.sliverDir(id), "geni") }

func (s store) init() error {
	return os.MkdirAll(s.sliversDir(), 0o700)
}

func (s store) save(r *record) error {
	r.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.recordPath(r.ID), b, 0o600)
}

func (s store) remove(id string) error {
	err := os.Remove(s.recordPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// loadAll reads every record. A file that does not parse is reported and
// skipped (renamed aside), not fatal: one bad file must not stop the agent.
func (s store) loadAll() ([]*record, []error) {
	entries, err := os.ReadDir(s.sliversDir())
	if err != nil {
		return nil, []error{err}
	}
	var out []*record
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		id := strings.TrimSuffix(name, ".json")
		b, err := os.ReadFile(filepath.Join(s.sliversDir(), name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil || r.ID != id || agent.ValidID(id) != nil {
			errs = append(errs, fmt.Errorf("state file %s is not a valid sliver record (%v); moved aside", name, err))
			_ = os.Rename(filepath.Join(s.sliversDir(), name), filepath.Join(s.sliversDir(), name+".bad"))
			continue
		}
		out = append(out, &r)
	}
	return out, errs
}

// writeFileAtomic replaces path with data so readers and crashes see either
// the old content or the new, never a mix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
