package provision

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/store"
)

// do carries out one job and returns a short result for jobs.result. Every
// step is idempotent on the agent, so a job taken over after its worker died
// simply runs again.
func (p *Provisioner) do(ctx context.Context, j *store.Job) (string, error) {
	url, err := p.st.AgentURL(ctx, j.NodeName)
	if err != nil {
		return "", err
	}
	if url == "" {
		return "", am.Errorf(am.Error, "node %s has no agent URL", j.NodeName)
	}
	c := p.client(url)
	id := AgentID(j.SliverURN)
	if j.Kind == store.JobDelete {
		return p.teardown(ctx, j, c, id)
	}
	s, err := p.st.SliverByURN(ctx, j.SliverURN)
	if err != nil {
		return "", err
	}
	if s == nil || s.Allocation != am.Provisioned {
		return "sliver gone", nil // deleted meanwhile; its delete job follows
	}
	switch j.Kind {
	case store.JobProvision:
		return p.provision(ctx, s, c, id)
	case store.JobStart:
		return p.start(ctx, s, c, id, "agent:start")
	case store.JobStop:
		st, err := c.Stop(ctx, id)
		if am.CodeOf(err) == am.SearchFailed {
			msg := "stopped (nothing ran on the node)"
			_, err := p.st.UpdateSliver(ctx, s.URN, "agent:stop", store.SliverUpdate{Operational: am.NotReady, ResourceMsg: &msg})
			return "no container", err
		}
		if err != nil {
			return "", err
		}
		return p.report(ctx, s, c, st, "agent:stop")
	case store.JobRestart:
		if _, err := c.Stop(ctx, id); err != nil && am.CodeOf(err) != am.SearchFailed {
			return "", err
		}
		return p.start(ctx, s, c, id, "agent:restart")
	case store.JobUpdateUsers:
		users, err := p.loginUsers(ctx, s)
		if err != nil {
			return "", err
		}
		st, err := c.UpdateUsers(ctx, id, users)
		if err != nil {
			return "", err
		}
		if _, err := p.report(ctx, s, c, st, "agent:update_users"); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d users (of %d)", len(users), len(s.Users)), nil
	case store.JobFetchData:
		n, err := p.archive(ctx, j, c, id, false)
		if err != nil {
			return "", err
		}
		msg := fmt.Sprintf("/data archived at %s (%d bytes): POST your slice credential to %s", time.Now().UTC().Format(time.RFC3339), n, p.DataURL(s.URN))
		_, err = p.st.UpdateSliver(ctx, s.URN, "agent:fetch_data", store.SliverUpdate{ResourceMsg: &msg})
		return fmt.Sprintf("archived %d bytes", n), err
	}
	return "", am.Errorf(am.Error, "unknown job kind %q", j.Kind)
}

// provision fetches the sliver's image and runs its container.
// start starts the sliver's container and reports its state as event. A
// sliver that never got as far as a container (its provision failed, or the
// agent lost it) is provisioned afresh instead.
func (p *Provisioner) start(ctx context.Context, s *am.Sliver, c *agent.Client, id, event string) (string, error) {
	st, err := c.Start(ctx, id)
	if am.CodeOf(err) == am.SearchFailed {
		return p.provision(ctx, s, c, id)
	}
	if err != nil {
		return "", err
	}
	return p.report(ctx, s, c, st, event)
}

func (p *Provisioner) provision(ctx context.Context, s *am.Sliver, c *agent.Client, id string) (string, error) {
	dataURL, logURL := p.DataURL(s.URN), p.LogsURL(s.URN)
	msg := "fetching image " + s.Image.URL
	if _, err := p.st.UpdateSliver(ctx, s.URN, "agent:provision", store.SliverUpdate{ResourceMsg: &msg, DataURL: &dataURL, LogURL: &logURL}); err != nil {
		return "", err
	}
	s.DataURL, s.LogURL = dataURL, logURL
	if s.Image.URL == "" {
		return "", am.Errorf(am.BadArgs, "sliver %s has no image to run", s.URN)
	}
	instance, err := p.instance(ctx)
	if err != nil {
		return "", err
	}
	req := agent.FetchRequest{URL: s.Image.URL, SHA256: s.Image.SHA256, Aggregate: instance}
	var st agent.Status
	for {
		st, err = c.FetchWait(ctx, id, req, p.cfg.FetchWait)
		if err != nil {
			return "", err
		}
		if st.Image.State != agent.ImageFetching {
			break
		}
	}
	if st.Image.State == agent.ImageFailed {
		return "", am.Errorf(am.Error, "the image could not be fetched: %s", st.Image.Error)
	}
	imageID := st.Image.ID
	manifest := ""
	if p.cfg.RSpecs != nil {
		if m, err := p.cfg.RSpecs.Manifest(s.SliceURN, []am.Sliver{*s}, time.Now()); err == nil {
			manifest = m
		}
	}
	users, err := p.loginUsers(ctx, s)
	if err != nil {
		return "", err
	}
	start, err := startRequest(s, users, manifest, p.cfg.IdleStop, p.cfg.IdleWarn)
	start.Aggregate = instance
	if err == nil {
		// The operator's limits for the sliver type; the agent caps them
		// by the node's own.
		l := p.cfg.SliverLimits[s.SliverType]
		start.MemoryBytes, start.CPUs, start.DataBytes = l.MemoryBytes, l.CPUs, l.DataBytes
		start.Pids, start.ArchiveBytes = l.Pids, l.ArchiveBytes
	}
	if err != nil {
		return "", err
	}
	if start.Links, err = p.linkAttachments(ctx, s); err != nil {
		return "", err
	}
	if err := start.Validate(); err != nil {
		return "", err
	}
	msg = "starting container"
	if _, err := p.st.UpdateSliver(ctx, s.URN, "agent:provision", store.SliverUpdate{ResourceMsg: &msg, ImageID: &imageID}); err != nil {
		return "", err
	}
	st, _, err = c.Run(ctx, id, start)
	if err != nil {
		return "", err
	}
	if st.State == agent.StateCreated {
		// A Run cut short (its worker died between create and start) left
		// the container created but never started: start it now.
		if st, err = c.Start(ctx, id); err != nil {
			return "", err
		}
	}
	return p.report(ctx, s, c, st, "agent:provision")
}

// startRequest turns the sliver's services into the agent's start request.
// The first services/execute is the container's command: with a shell
// ("sh", "bash", "/bin/sh") it runs as /bin/sh -c <command> inside the
// container; with shell "exec" (or "none") the command is split on blanks
// into argv and run directly, for images without a shell (FROM scratch).
// Without execute, the image's own entrypoint and command run. A
// <geniam:run> adds the restart policy, time limit and environment, and its
// args are the command (the parser refuses args together with execute).
// users are the ones whose keys may log in (loginUsers).
func startRequest(s *am.Sliver, users []agent.User, manifest string, idleStop, idleWarn time.Duration) (agent.StartRequest, error) {
	req := agent.StartRequest{SliceURN: s.SliceURN, SliverURN: s.URN, Manifest: manifest, Users: users,
		IdleStopSeconds: int64(idleStop / time.Second), IdleWarnSeconds: int64(idleWarn / time.Second)}
	if req.IdleStopSeconds <= 0 {
		req.IdleStopSeconds, req.IdleWarnSeconds = 0, 0
	}
	for _, in := range s.Install {
		// services/install: unpacked by the agent before the start command.
		req.Install = append(req.Install, agent.Install{URL: in.URL, Path: path.Clean(in.Path)})
	}
	if r := s.Run; r != nil {
		// <geniam:run>: the restart policy, time limit, environment and
		// argv the experimenter asked for (the parser checked them).
		switch r.Restart {
		case am.RestartAlways:
			req.Restart = agent.RestartAlways
		case am.RestartOnFailure:
			req.Restart, req.MaxRetries = agent.RestartOnFailure, r.MaxRetries
		default:
			req.Restart = agent.RestartOnce
		}
		req.TimeLimitSeconds, req.Env, req.Command = r.TimeLimit, r.Env, r.Args
	}
	if len(s.Execute) > 0 && len(req.Command) == 0 {
		x := s.Execute[0]
		switch strings.ToLower(x.Shell) {
		case "exec", "none":
			req.Command = strings.Fields(x.Command)
		default:
			req.Shell = x.Command
		}
	}
	return req, req.Validate()
}

// report writes what the agent says of a sliver into its row.
func (p *Provisioner) report(ctx context.Context, s *am.Sliver, c *agent.Client, st agent.Status, event string) (string, error) {
	u := sliverUpdate(st, s.NodeName, c.URL())
	if _, err := p.st.UpdateSliver(ctx, s.URN, event, u); err != nil {
		return "", err
	}
	return string(st.State), nil
}

// sliverUpdate maps an agent status to the sliver's operational state,
// geni_error, geni_resource_status, exit code, output tails and login
// (whose host, when the agent does not name one, is its URL's host).
func sliverUpdate(st agent.Status, node, agentURL string) store.SliverUpdate {
	var op am.OperationalState
	errMsg, res := "", ""
	switch st.State {
	case agent.StateRunning:
		op, res = am.Ready, "running"
		if i := st.Idle; i != nil && i.Warned {
			res = fmt.Sprintf("running; idle since %s: stopped at %s unless active (container and /data kept)",
				i.Since.UTC().Format(time.RFC3339), i.StopAt.UTC().Format(time.RFC3339))
		}
	case agent.StateRestarting:
		op, res = am.Ready, "restarting"
		if st.Container != nil {
			res = fmt.Sprintf("restarting (restart %d)", st.Container.RestartCount)
		}
	case agent.StateExited:
		op, res = am.Ready, "finished"
		if st.ExitCode != nil {
			res = fmt.Sprintf("finished with exit code %d", *st.ExitCode)
		}
	case agent.StateStopped:
		op, res = am.NotReady, "stopped"
		if st.Reason != "" {
			res = st.Reason // stopped for idleness
		}
	case agent.StateFailed:
		op, errMsg, res = am.Failed, "agent on "+node+": "+st.Reason, "failed"
	case agent.StateCreated, agent.StateFetched, agent.StateFetching, agent.StateEmpty:
		op, res = am.Configuring, string(st.State)
	default:
		op, res = am.Configuring, string(st.State)
	}
	if d := st.Data; d != nil && d.OverQuota && op != am.Failed {
		// Honest about a full /data: the container runs, its writes fail.
		res += fmt.Sprintf("; /data over quota (%d of %d bytes used)", d.UsedBytes, d.LimitBytes)
	}
	exit := st.ExitCode
	stdout, stderr := st.StdoutTail, st.StderrTail
	u := store.SliverUpdate{Operational: op, Error: &errMsg, ResourceMsg: &res, ExitCode: &exit,
		StdoutTail: &stdout, StderrTail: &stderr, Login: &store.Login{}}
	if l := st.Login; l != nil && l.Port > 0 {
		host := l.Host
		if host == "" {
			if u, err := url.Parse(agentURL); err == nil {
				host = u.Hostname()
			}
		}
		if host != "" {
			u.Login = &store.Login{Host: host, Port: l.Port, User: l.Username}
		}
	}
	if st.Image.ID != "" {
		id := st.Image.ID
		u.ImageID = &id
	}
	return u
}

// failed records a job's permanent failure on its sliver: geni_failed with
// what the agent said. A failed stop or action on a running container does
// not make the container failed: only the error is shown.
func (p *Provisioner) failed(ctx context.Context, j *store.Job, err error) {
	msg := j.Kind + " failed on node " + j.NodeName + ": " + errText(err)
	u := store.SliverUpdate{Error: &msg}
	switch j.Kind {
	case store.JobProvision, store.JobStart, store.JobRestart:
		u.Operational = am.Failed
	case store.JobDelete:
		return // the sliver is gone; jobs.last_error keeps it for the operator
	}
	if _, err := p.st.UpdateSliver(ctx, j.SliverURN, "agent:"+j.Kind, u); err != nil {
		p.log.Warn("provisioner: recording a failure", "sliver", j.SliverURN, "err", err)
	}
}

// noteRetry shows a transient failure in the sliver's resource status.
func (p *Provisioner) noteRetry(ctx context.Context, j *store.Job, err error, after time.Duration) {
	if j.Kind == store.JobDelete {
		return
	}
	msg := fmt.Sprintf("%s: attempt %d failed (%s); retrying in %s", j.Kind, j.Attempts, clip(errText(err), 300), after.Round(100*time.Millisecond))
	if _, err := p.st.UpdateSliver(ctx, j.SliverURN, "agent:"+j.Kind, store.SliverUpdate{ResourceMsg: &msg}); err != nil {
		p.log.Warn("provisioner: recording a retry", "sliver", j.SliverURN, "err", err)
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// teardown is Delete and expiry on the node: archive /data into the archive
// directory, then remove everything of the sliver on the agent.
func (p *Provisioner) teardown(ctx context.Context, j *store.Job, c *agent.Client, id string) (string, error) {
	n, err := p.archive(ctx, j, c, id, true)
	archived := fmt.Sprintf("archived %d bytes", n)
	switch {
	case am.CodeOf(err) == am.SearchFailed:
		archived = "nothing on the node to archive"
	case am.CodeOf(err) == am.TooBig:
		// Too large to keep must not keep the sliver alive on its node.
		archived = am.MessageOf(err)
		p.log.Warn("provisioner: /data not archived", "sliver", j.SliverURN, "err", err)
	case err != nil:
		return "", err
	}
	// /data is safe in the archive: empty it first. On a node whose disk
	// it filled, that is what gives the agent room to record the rest of
	// the teardown (an agent that keeps its records elsewhere does not
	// need it; it costs one request).
	if err := c.DeleteData(ctx, id); err != nil && am.CodeOf(err) != am.SearchFailed {
		return "", err
	}
	if err := c.Delete(ctx, id); err != nil {
		return "", err
	}
	how := "deleted"
	if j.Args.Expired {
		how = "expired"
	}
	return how + ", " + archived, nil
}

// ArchivePath is where the archive of a sliver is kept: its /data tar,
// gzipped as the agent sent it (archives of older versions, plain .tar, are
// still served).
func (p *Provisioner) ArchivePath(sliverURN string) string {
	return filepath.Join(p.cfg.ArchiveDir, AgentID(sliverURN)+".tar.gz")
}

// archive copies the sliver's /data from the agent into the archive
// directory (through a temporary file, renamed when complete, so a broken
// transfer never leaves a short archive that looks whole) and records it.
func (p *Provisioner) archive(ctx context.Context, j *store.Job, c *agent.Client, id string, final bool) (int64, error) {
	if err := p.archiveLogs(ctx, c, j.SliverURN, id); err != nil {
		return 0, err
	}
	rc, err := c.DataGzip(ctx, id)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	dst := p.ArchivePath(j.SliverURN)
	tmp, err := os.CreateTemp(p.cfg.ArchiveDir, "."+id+"-*.part")
	if err != nil {
		return 0, am.Wrap(am.ServerError, err, "archive: cannot write in %s", p.cfg.ArchiveDir)
	}
	defer os.Remove(tmp.Name())
	// The agent caps its tar; this caps what a compromised node could send.
	n, err := io.Copy(tmp, io.LimitReader(rc, p.cfg.ArchiveMaxBytes+1))
	if err == nil && n > p.cfg.ArchiveMaxBytes {
		tmp.Close()
		return 0, am.Errorf(am.TooBig, "archive: the /data of %s is larger than archive_max_bytes (%d bytes gzipped): not kept", id, p.cfg.ArchiveMaxBytes)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, am.Wrap(am.TimedOut, err, "archive: the transfer of %s was interrupted", id)
		}
		return 0, am.Wrap(am.Unavailable, err, "archive: the transfer of %s from the agent broke", id)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return 0, am.Wrap(am.ServerError, err, "archive: cannot keep %s", dst)
	}
	err = p.st.PutArchive(ctx, store.Archive{SliverURN: j.SliverURN, SliceURN: j.SliceURN, NodeName: j.NodeName,
		Path: dst, Bytes: n, Final: final, ExpiresAt: time.Now().Add(p.cfg.ArchiveRetention)})
	if err != nil {
		return 0, err
	}
	p.log.Info("provisioner: /data archived", "sliver", j.SliverURN, "bytes", n, "path", dst, "final", final)
	return n, nil
}
