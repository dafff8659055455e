package node

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// Logs copies the whole stdout or stderr (stream "stdout" or "stderr"), or
// both in the order they were written ("all"), of the sliver's container to w.
func (s *Service) Logs(ctx context.Context, id, stream string, w io.Writer) error {
	if stream != "stdout" && stream != "stderr" && stream != "all" {
		return am.Errorf(am.BadArgs, "logs: stream must be stdout, stderr or all, not %q", am.Clip(stream, 20))
	}
	sl, err := s.lookup(id)
	if err != nil {
		return err
	}
	cid := sl.rec.ContainerID
	sl.mu.Unlock() // streaming may take long
	if cid == "" {
		return am.Errorf(am.SearchFailed, "logs: sliver %s has no container", id)
	}
	o, e := w, io.Discard
	switch stream {
	case "stderr":
		o, e = io.Discard, w
	case "all":
		e = w
	}
	if err := s.rt.StreamLogs(ctx, cid, o, e); err != nil {
		if errors.Is(err, agent.ErrNotFound) {
			return am.Errorf(am.SearchFailed, "logs: the container of %s is gone", id)
		}
		return engineErr("logs", err)
	}
	return nil
}

// DataDir is the host directory bound at /data for the sliver.
func (s *Service) DataDir(id string) string { return s.st.dataDir(id) }

// EmitData writes the sliver's /data directory to w as a tar archive, with
// entry names prefixed by prefix ("" for v2; "NAME/data/" for v1). It streams
// with constant memory. A sliver the agent has no record of is
// SEARCHFAILED; a known sliver with no data yet gives an empty archive.
func (s *Service) EmitData(ctx context.Context, id string, w io.Writer, prefix string) (files int, err error) {
	sl, err := s.lookup(id)
	if err != nil {
		return 0, err
	}
	spec := sl.rec.Spec
	sl.mu.Unlock() // streaming may take long; the walk copes with concurrent change
	dir := s.st.dataDir(id)
	quota := s.dataQuota(spec)
	if _, err := os.Stat(s.st.dataImage(id)); spec == nil && err != nil {
		quota = 0 // never started: a plain (empty) directory, no filesystem yet
	}
	if err := s.ensureData(ctx, id, quota); err != nil {
		return 0, am.Wrap(am.ServerError, err, "emit data: could not prepare the /data of %s", id)
	}
	maxBytes := s.cfg.MaxArchiveBytes
	if spec != nil {
		maxBytes = capLimit(spec.ArchiveBytes, maxBytes)
	}
	ts, err := writeTar(ctx, w, dir, prefix, tarLimits{MaxBytes: maxBytes})
	if ts.SkippedFiles > 0 {
		s.log.Warn("agent: /data archive cut at its limit", "sliver", id, "left_out", ts.SkippedFiles, "bytes", ts.Bytes, "limit", maxBytes)
	}
	return ts.Files, err
}

// DeleteData empties the sliver's /data directory (the directory itself
// stays, as a running container may have it mounted).
func (s *Service) DeleteData(ctx context.Context, id string) error {
	if err := agent.ValidID(id); err != nil {
		return err
	}
	if err := clearDir(s.st.dataDir(id)); err != nil {
		return am.Wrap(am.ServerError, err, "delete data: could not empty the data directory of %s", id)
	}
	s.log.Info("agent: data deleted", "sliver", id)
	return nil
}

// UpdateUsers replaces the slice users' keys in /geni/authorized_keys
// (geni_update_users); a running container sees the new file at once.
func (s *Service) UpdateUsers(ctx context.Context, id string, users []agent.User) (agent.Status, error) {
	if err := (agent.UsersRequest{Users: users}).Validate(); err != nil {
		return agent.Status{}, err
	}
	sl, err := s.lookup(id)
	if err != nil {
		return agent.Status{}, err
	}
	defer sl.mu.Unlock()
	dir := s.st.geniDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return agent.Status{}, am.Wrap(am.ServerError, err, "update users: %s", id)
	}
	if err := writeAuthorizedKeys(dir, users); err != nil {
		return agent.Status{}, am.Wrap(am.ServerError, err, "update users: could not write the keys of %s", id)
	}
	if sl.rec.Spec != nil {
		sl.rec.Spec.Users = users
		s.saveLogged(sl.rec)
	}
	return s.status(ctx, sl)
}
