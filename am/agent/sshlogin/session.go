package sshlogin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// The payloads of the session requests we serve (RFC 4254 section 6).
type (
	ptyRequest struct {
		Term                 string
		Cols, Rows, Wpx, Hpx uint32
		Modes                string
	}
	windowChange struct {
		Cols, Rows, Wpx, Hpx uint32
	}
	execRequest struct{ Command string }
	envRequest  struct{ Name, Value string }
	exitStatus  struct{ Status uint32 }
)

// Where images keep an sftp server (Debian, Alpine, Fedora, Arch).
var sftpServers = []string{
	"/usr/lib/openssh/sftp-server",
	"/usr/lib/ssh/sftp-server",
	"/usr/libexec/openssh/sftp-server",
	"/usr/libexec/sftp-server",
	"/usr/lib/sftp-server",
}

// Shells a login shell is looked for at, in order.
var shells = []string{"/bin/bash", "/bin/sh"}

// allowedEnv are the variables a client may pass (OpenSSH's AcceptEnv
// default on Debian): locale and terminal only.
func allowedEnv(name string) bool {
	return name == "LANG" || name == "TERM" || name == "COLORTERM" || strings.HasPrefix(name, "LC_")
}

const (
	maxCommand = 64 << 10 // bytes of an exec request's command
	maxEnv     = 32       // env requests per session
)

// session serves one session channel: it collects pty and env requests,
// runs the one shell, exec or subsystem in the container, forwards window
// changes, and ends with the exit status. The process's start and end are
// reported to the Targets (who says whose session it is) for the
// aggregate's audit trail, under one session id that the log lines quote.
func (s *Server) session(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request, container string,
	who agent.SessionEvent, log *slog.Logger) {
	defer ch.Close()
	var (
		spec    agent.ExecSpec
		proc    agent.ExecProcess
		what    string
		started time.Time
		exit    *int // the process's exit status, once known
		done    = make(chan waitResult, 1)
	)
	who.Session = am.NewLogID()
	log = log.With("log_id", who.Session)
	defer func() {
		if proc != nil {
			proc.Close()
			end := who
			end.Event, end.At, end.Command, end.ExitStatus = agent.SessionEnd, time.Now(), auditCommand(what), exit
			s.targets.NoteSession(end)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-done:
			if ctx.Err() != nil {
				// Cut (key withdrawn, sliver ended): Wait returned because
				// of that, not with the process's own status.
				return
			}
			code := r.code
			if r.err != nil {
				log.Warn("ssh: waiting for the session's process", "err", r.err)
				code = 255
			}
			exit = &code
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{uint32(code)}))
			log.Info("ssh: session ended", "event", "ssh_session", "command", what, "tty", spec.Tty,
				"exit_code", code, "took", time.Since(started).Round(time.Millisecond))
			return
		case req, ok := <-reqs:
			if !ok {
				if proc == nil {
					return
				}
				reqs = nil // the client closed; wait for the process to see it
				proc.Close()
				continue
			}
			switch req.Type {
			case "pty-req":
				var p ptyRequest
				if proc != nil || ssh.Unmarshal(req.Payload, &p) != nil {
					_ = req.Reply(false, nil)
					continue
				}
				spec.Tty, spec.Rows, spec.Cols = true, p.Rows, p.Cols
				if p.Term != "" && len(p.Term) < 64 {
					spec.Env = append(spec.Env, "TERM="+p.Term)
				}
				_ = req.Reply(true, nil)
			case "env":
				var e envRequest
				ok := proc == nil && ssh.Unmarshal(req.Payload, &e) == nil && allowedEnv(e.Name) &&
					len(spec.Env) < maxEnv && len(e.Value) < 1024 && !strings.ContainsRune(e.Value, 0)
				if ok {
					spec.Env = append(spec.Env, e.Name+"="+e.Value)
				}
				_ = req.Reply(ok, nil)
			case "window-change":
				var w windowChange
				if proc != nil && spec.Tty && ssh.Unmarshal(req.Payload, &w) == nil {
					rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_ = proc.Resize(rctx, w.Rows, w.Cols)
					cancel()
				}
				_ = req.Reply(false, nil)
			case "shell", "exec", "subsystem":
				if proc != nil {
					_ = req.Reply(false, nil)
					continue
				}
				cmd, label, refusal := s.command(ctx, container, req)
				what = label
				if refusal != "" {
					log.Info("ssh: session refused", "event", "ssh_session", "command", label, "reason", refusal)
					if req.Type == "subsystem" {
						_ = req.Reply(false, nil)
						continue
					}
					_ = req.Reply(true, nil)
					fmt.Fprintf(ch.Stderr(), "geniam: %s\r\n", refusal)
					_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{127}))
					return
				}
				spec.Cmd = cmd
				var err error
				proc, err = s.exec.Exec(ctx, container, spec, ch, ch.Stderr())
				if err != nil {
					log.Warn("ssh: could not start the session in the container", "event", "ssh_session", "command", label, "err", err)
					_ = req.Reply(true, nil)
					fmt.Fprintf(ch.Stderr(), "geniam: the container could not run the session (is it running?)\r\n")
					_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{255}))
					return
				}
				started = time.Now()
				_ = req.Reply(true, nil)
				log.Info("ssh: session started", "event", "ssh_session", "command", label, "tty", spec.Tty)
				begin := who
				begin.Event, begin.At, begin.Command = agent.SessionStart, started, auditCommand(label)
				s.targets.NoteSession(begin)
				go func(p agent.ExecProcess, tty bool) {
					_, _ = io.Copy(p, ch)
					// With a TTY the engine ends the whole stream at a
					// half-close (the docker CLI never sends one then):
					// the terminal's own EOF character is the end of input.
					if !tty {
						_ = p.CloseStdin()
					}
				}(proc, spec.Tty)
				go func(p agent.ExecProcess) {
					code, err := p.Wait(ctx)
					done <- waitResult{code, err}
				}(proc)
			default:
				// signal, x11-req, auth-agent-req@openssh.com, ...: not offered.
				_ = req.Reply(false, nil)
			}
		}
	}
}

// auditCommand is what the audit trail says ran: an exec's command line
// stays in the node's log (it may hold a secret).
func auditCommand(label string) string {
	if strings.HasPrefix(label, "exec") {
		return "exec"
	}
	return label
}

type waitResult struct {
	code int
	err  error
}

// command picks the argv a shell, exec or subsystem request runs in the
// container, a label for the audit log, or why it cannot be served. A
// command runs under /bin/sh -c when the image has one, else it is split
// on blanks (images FROM scratch). No host shell is ever involved.
func (s *Server) command(ctx context.Context, container string, req *ssh.Request) (argv []string, label, refusal string) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first := func(paths []string) string {
		for _, p := range paths {
			if ok, err := s.exec.PathExists(cctx, container, p); err == nil && ok {
				return p
			}
		}
		return ""
	}
	switch req.Type {
	case "shell":
		sh := first(shells)
		if sh == "" {
			return nil, "shell", "this image has no shell (/bin/sh): give the command to run, e.g. ssh ... /path/to/program args"
		}
		return []string{sh}, "shell " + sh, ""
	case "exec":
		var x execRequest
		if ssh.Unmarshal(req.Payload, &x) != nil || len(x.Command) > maxCommand || strings.ContainsRune(x.Command, 0) {
			return nil, "exec", "the command is malformed or longer than 64 KiB"
		}
		label = "exec " + am.Clip(x.Command, 200)
		if first(shells[1:]) != "" {
			return []string{"/bin/sh", "-c", x.Command}, label, ""
		}
		argv = strings.Fields(x.Command)
		if len(argv) == 0 {
			return nil, label, "empty command, and this image has no shell"
		}
		return argv, label, ""
	default: // subsystem
		var x execRequest
		if ssh.Unmarshal(req.Payload, &x) != nil || x.Command != "sftp" {
			return nil, "subsystem " + am.Clip(x.Command, 40), "only the sftp subsystem is offered"
		}
		srv := first(sftpServers)
		if srv == "" {
			return nil, "subsystem sftp", "this image has no sftp-server (install openssh-sftp-server for scp and sftp)"
		}
		return []string{srv}, "subsystem sftp", ""
	}
}
