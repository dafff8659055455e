package agent

import (
	"context"
	"io"

	"github.com/geniam/geniam/am"
)

// SSH login (package agent/sshlogin) reaches a sliver's container through
// the engine: the agent's SSH server authenticates with the sliver's
// geni_users keys and runs the session as a process inside the container.
// This file is the agent's side of it: the runtime verb that runs the
// process, and what the server asks the Service about a login name.

// Execer runs processes inside a running container (`docker exec`). It is
// kept apart from Runtime so that runtimes without it still serve
// everything else; docker.Runtime implements both.
type Execer interface {
	// Exec starts spec.Cmd in the container; its output goes to stdout and
	// stderr (with a TTY everything goes to stdout) until it ends.
	Exec(ctx context.Context, containerID string, spec ExecSpec, stdout, stderr io.Writer) (ExecProcess, error)
	// PathExists reports whether path exists in the container's files
	// (a shell, an sftp server), so a login can choose what to run.
	PathExists(ctx context.Context, containerID, path string) (bool, error)
}

// ExecSpec is a process to run in a container.
type ExecSpec struct {
	Cmd        []string // argv; never a host shell string
	Env        []string // KEY=value
	Tty        bool
	Rows, Cols uint32 // initial terminal size with Tty
}

// ExecProcess is a process started by Execer.Exec.
type ExecProcess interface {
	io.Writer          // its stdin
	CloseStdin() error // end of its input
	Resize(ctx context.Context, rows, cols uint32) error
	// Wait returns the exit code once the output has been copied out.
	Wait(ctx context.Context) (int, error)
	Close() error
}

// LoginTarget is what an SSH login to a sliver reaches: its container and
// the users whose keys may log in, as the agent knows them now (a
// geni_update_users takes effect at the next check).
type LoginTarget struct {
	SliverID    string
	SliceURN    string
	SliverURN   string
	ContainerID string
	Users       []User
}

// Login is where the experimenter logs in to a sliver: the manifest's
// <login authentication="ssh-keys" hostname port username>.
type Login struct {
	Host     string `json:"host,omitempty"` // "" when the agent does not know its public name: the aggregate uses its agent URL's host
	Port     int    `json:"port"`
	Username string `json:"username"`
}

// LoginTarget returns the login target of sliver id (the SSH user name is
// the sliver id). Only a sliver with a container can be logged in to; an
// unknown, deleted or never started sliver is SEARCHFAILED. It reads the
// agent's records only, so the SSH server can ask it often.
func (s *Service) LoginTarget(id string) (LoginTarget, error) {
	sl, err := s.lookup(id)
	if err != nil {
		return LoginTarget{}, err
	}
	defer sl.mu.Unlock()
	r := sl.rec
	if r.ContainerID == "" || r.Spec == nil {
		return LoginTarget{}, am.Errorf(am.SearchFailed, "sliver %s has no container to log in to", id)
	}
	if r.TimeLimitKilled {
		return LoginTarget{}, am.Errorf(am.Expired, "sliver %s used up its time limit", id)
	}
	if r.StoppedByRequest {
		// geni_stop, Shutdown or the idle policy: no new logins, and the
		// server ends open ones; geni_start lets them in again.
		return LoginTarget{}, am.Errorf(am.Refused, "sliver %s is stopped", id)
	}
	return LoginTarget{SliverID: id, SliceURN: r.SliceURN, SliverURN: r.SliverURN, ContainerID: r.ContainerID,
		Users: append([]User(nil), r.Spec.Users...)}, nil
}

// NoteSession records an SSH session's start or end in the change feed,
// from which the aggregate writes its audit row.
func (s *Service) NoteSession(ev SessionEvent) { s.changes.session(ev) }

// login is the Status' login field for a record with a container.
func (s *Service) login(r *record) *Login {
	if s.cfg.LoginPort <= 0 || r.ContainerID == "" {
		return nil
	}
	return &Login{Host: s.cfg.LoginHost, Port: s.cfg.LoginPort, Username: r.ID}
}
