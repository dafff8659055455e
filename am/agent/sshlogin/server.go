// Package sshlogin is the node agent's SSH server: experimenters log in to
// their sliver's container with the slice's geni_users keys, without an sshd
// in the image. The SSH user name is the sliver id (the manifest's
// <login username>); the session runs as a process inside the container
// through the engine's exec API (agent.Execer): a shell with a TTY, a
// command with its exit status, window resizes, and sftp (hence scp) when
// the image has an sftp-server. Port forwarding and agent forwarding are
// refused: the container's network is the experiment's, not the node's.
//
// Access follows the agent's records: every check (at login and then every
// CheckInterval) asks the Service for the sliver's current keys, so a
// geni_update_users works at once, and Delete, expiry, a stop or a removed
// key ends the connection within one interval. Every login, refusal and
// session end is logged at INFO with event=ssh_login, ssh_refused,
// ssh_session, ssh_access_ended (the audit trail of the node).
//
// It uses golang.org/x/crypto/ssh, the Go team's SSH implementation.
package sshlogin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// Targets is what the server asks the agent: *node.Service implements it.
type Targets interface {
	LoginTarget(id string) (agent.LoginTarget, error)
	// NoteActivity says a login session is open (idle detection).
	NoteActivity(id string)
	// NoteSession reports a session's start or end (the aggregate's audit
	// trail, through the change feed).
	NoteSession(ev agent.SessionEvent)
}

// Config tunes the server. Zero values take the defaults named.
type Config struct {
	HostKeyFile      string        // ed25519 host key (OpenSSH PEM); created if missing; required
	MaxConns         int           // connections at once, all slivers; default 64
	MaxConnsPerUser  int           // connections at once to one sliver; default 8
	HandshakeTimeout time.Duration // default 10 s
	CheckInterval    time.Duration // how often access is checked again; default 1 s
	Logger           *slog.Logger
}

// Server serves SSH logins into sliver containers.
type Server struct {
	cfg     Config
	targets Targets
	exec    agent.Execer
	log     *slog.Logger
	ssh     *ssh.ServerConfig

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]string // open connections, by sliver id ("" before auth)
	closed bool
}

// New loads (or creates) the host key and returns a server; call Serve.
func New(cfg Config, targets Targets, exec agent.Execer) (*Server, error) {
	if cfg.HostKeyFile == "" {
		return nil, errors.New("sshlogin: HostKeyFile is required")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.MaxConnsPerUser <= 0 {
		cfg.MaxConnsPerUser = 8
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	signer, err := loadHostKey(cfg.HostKeyFile)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, targets: targets, exec: exec, log: cfg.Logger, ctx: ctx, cancel: cancel, conns: map[net.Conn]string{}}
	s.ssh = &ssh.ServerConfig{
		PublicKeyCallback: s.checkKey,
		MaxAuthTries:      6,
		ServerVersion:     "SSH-2.0-geniam-nodeagent",
	}
	s.ssh.AddHostKey(signer)
	return s, nil
}

// HostKey returns the server's public host key in authorized_keys form.
func (s *Server) HostKey() string {
	signer, err := loadHostKey(s.cfg.HostKeyFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
}

// loadHostKey reads the host key, or creates an ed25519 one (mode 0600).
func loadHostKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		block, merr := ssh.MarshalPrivateKey(priv, "geniam node agent host key")
		if merr != nil {
			return nil, merr
		}
		b = pem.EncodeToMemory(block)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("sshlogin: host key directory: %w", err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("sshlogin: writing the host key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("sshlogin: reading the host key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("sshlogin: host key %s: %w", path, err)
	}
	return signer, nil
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		if !s.track(c, "") {
			s.log.Warn("ssh: connection refused, too many at once", "event", "ssh_refused", "remote", c.RemoteAddr().String(), "max", s.cfg.MaxConns)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// Close stops accepting, ends every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// track registers c under sliver id (re-registering an existing c moves
// it); false when a limit is reached.
func (s *Server) track(c net.Conn, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if _, ok := s.conns[c]; !ok && len(s.conns) >= s.cfg.MaxConns {
		return false
	}
	if id != "" {
		n := 0
		for _, other := range s.conns {
			if other == id {
				n++
			}
		}
		if n >= s.cfg.MaxConnsPerUser {
			return false
		}
	}
	s.conns[c] = id
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Permissions extensions carried from the key check to the session.
const (
	extFingerprint = "geniam-fingerprint"
	extUserURN     = "geniam-user-urn"
	extContainer   = "geniam-container"
	extSliverURN   = "geniam-sliver-urn"
	extSliceURN    = "geniam-slice-urn"
)

// maxSessionsPerConn bounds the processes one connection can start at once.
const maxSessionsPerConn = 10

// errRefused is all a refused client learns; the log says why.
var errRefused = errors.New("not authorized")

// checkKey is the public key callback: the user name must be a sliver the
// agent runs a container for, and the key one of its users' keys.
func (s *Server) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	t, userURN, err := s.authorize(meta.User(), key)
	if err != nil {
		s.log.Info("ssh: key refused", "event", "ssh_refused", "user", am.Clip(meta.User(), 80), "remote", meta.RemoteAddr().String(), "key", fp, "reason", err.Error())
		return nil, errRefused
	}
	return &ssh.Permissions{Extensions: map[string]string{extFingerprint: fp, extUserURN: userURN, extContainer: t.ContainerID,
		extSliverURN: t.SliverURN, extSliceURN: t.SliceURN}}, nil
}

// authorize returns the sliver's target and the URN of the user whose key
// this is, or why not.
func (s *Server) authorize(id string, key ssh.PublicKey) (agent.LoginTarget, string, error) {
	if agent.ValidID(id) != nil {
		return agent.LoginTarget{}, "", errors.New("the user name is not a sliver id")
	}
	t, err := s.targets.LoginTarget(id)
	if err != nil {
		return agent.LoginTarget{}, "", err
	}
	want := key.Marshal()
	for _, u := range t.Users {
		for _, k := range u.Keys {
			pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err == nil && bytes.Equal(pk.Marshal(), want) {
				return t, u.URN, nil
			}
		}
	}
	return agent.LoginTarget{}, "", errors.New("the key is not one of the sliver's geni_users keys")
}

func (s *Server) serveConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(c, s.ssh)
	if err != nil {
		s.log.Debug("ssh: handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	defer sc.Close()
	_ = c.SetDeadline(time.Time{})
	id, perms := sc.User(), sc.Permissions.Extensions
	log := s.log.With("user", id, "remote", c.RemoteAddr().String(), "key", perms[extFingerprint], "user_urn", perms[extUserURN])
	if !s.track(c, id) {
		log.Warn("ssh: connection refused, too many to this sliver", "event", "ssh_refused", "max", s.cfg.MaxConnsPerUser)
		return
	}
	log.Info("ssh: login", "event", "ssh_login")
	s.targets.NoteActivity(id)
	go ssh.DiscardRequests(reqs) // no forwarding of any kind

	// Access is checked again while the connection lasts.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go s.watch(ctx, sc, id, perms[extContainer], log)

	var wg sync.WaitGroup
	var open atomic.Int32 // sessions of this connection
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.Prohibited, "only sessions are offered: no port forwarding")
			continue
		}
		if open.Load() >= maxSessionsPerConn {
			_ = nc.Reject(ssh.ResourceShortage, fmt.Sprintf("at most %d sessions per connection", maxSessionsPerConn))
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		open.Add(1)
		wg.Add(1)
		who := agent.SessionEvent{Sliver: id, SliverURN: perms[extSliverURN], SliceURN: perms[extSliceURN],
			User: perms[extUserURN], Key: perms[extFingerprint], Remote: c.RemoteAddr().String()}
		go func() {
			defer wg.Done()
			defer open.Add(-1)
			s.session(ctx, ch, creqs, perms[extContainer], who, log)
		}()
	}
	cancel()
	wg.Wait()
}

// watch closes the connection when the sliver no longer lets this login
// in: deleted, expired, stopped and removed, recreated, or the key was
// taken away by geni_update_users.
func (s *Server) watch(ctx context.Context, sc *ssh.ServerConn, id, container string, log *slog.Logger) {
	t := time.NewTicker(s.cfg.CheckInterval)
	defer t.Stop()
	fp := sc.Permissions.Extensions[extFingerprint]
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reason := ""
		target, err := s.targets.LoginTarget(id)
		switch {
		case err != nil:
			reason = err.Error()
		case target.ContainerID != container:
			reason = "the sliver's container was replaced"
		case !hasFingerprint(target, fp):
			reason = "the key was removed from the sliver's users"
		}
		if reason != "" {
			log.Info("ssh: access ended", "event", "ssh_access_ended", "reason", reason)
			sc.Close()
			return
		}
		s.targets.NoteActivity(id)
	}
}

func hasFingerprint(t agent.LoginTarget, fp string) bool {
	for _, u := range t.Users {
		for _, k := range u.Keys {
			if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err == nil && ssh.FingerprintSHA256(pk) == fp {
				return true
			}
		}
	}
	return false
}
