package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am/geniclient"
)

// What omni lacks: waiting for a slice, logging in, and getting data and
// output out (their table: verbs in main.go). They read the standard manifest
// (services/login) and, for data and output, the links of geniam's manifest
// extension; an aggregate without them is told apart with a clear "not
// offered" (exit 6), never guessed at.

// isTerminal reports whether w is a character device (a person watching).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func waitReady(s *session, args []string) error {
	start := time.Now()
	deadline := start.Add(s.o.waitTimeout)
	tty := isTerminal(s.log)
	last := ""
	for {
		urn, r, err := s.sliceCall(args[0], "", "", func(a *geniclient.AM, _ string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
			return a.Status(s.ctx, urns, c)
		})
		if err != nil && geniclient.Retryable(err) && time.Now().Add(s.o.interval).Before(deadline) {
			fmt.Fprintf(s.log, "\ngeni: %v; trying again\n", err)
			if err := sleep(s.ctx, s.o.interval); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if tty {
				fmt.Fprintln(s.log)
			}
			return err
		}
		slivers := geniclient.Slivers(r.Value)
		counts := map[string]int{}
		ready, failed := 0, 0
		for _, v := range slivers {
			state := strings.TrimPrefix(v.Operational, "geni_")
			if v.Allocation == "geni_allocated" {
				state = "allocated (not provisioned)"
			}
			counts[state]++
			switch v.Operational {
			case "geni_ready", "geni_ready_busy":
				ready++
			case "geni_failed":
				failed++
			}
		}
		line := progressLine(counts)
		elapsed := time.Since(start).Truncate(time.Second)
		if tty {
			fmt.Fprintf(s.log, "\r\033[Kwaiting for %s at %s: %s (%s)", geniclient.SliceName(urn), s.agg.Name(), line, elapsed)
		} else if line != last {
			fmt.Fprintf(s.log, "waiting for %s at %s: %s (%s)\n", geniclient.SliceName(urn), s.agg.Name(), line, elapsed)
		}
		last = line
		if n := counts["allocated (not provisioned)"]; n > 0 {
			if tty {
				fmt.Fprintln(s.log)
			}
			return fmt.Errorf("%d slivers are only allocated and will not get ready: provision them first (%s)", n, s.cmd("provision "+args[0]))
		}
		done := len(slivers) > 0 && (failed > 0 || ready == len(slivers))
		if done || time.Now().After(deadline) {
			if tty {
				fmt.Fprintln(s.log)
			}
			s.emit("wait", r.Value, func(w io.Writer) {
				fmt.Fprintf(w, "Slice %s at %s after %s:\n", urn, s.agg.Name(), elapsed)
				sliverTable(w, slivers)
				if next := nextAfterStatus(s, args[0], slivers); next != "" && failed == 0 && done {
					fmt.Fprintln(w, next)
				}
			})
			switch {
			case failed > 0:
				return &waitError{exitFailed, fmt.Sprintf("%d of %d slivers failed (see NOTE; %s)", failed, len(slivers), s.cmd("logs "+args[0]))}
			case !done && len(slivers) == 0:
				return &waitError{exitTimeout, fmt.Sprintf("the slice has no slivers here after %s", elapsed)}
			case !done:
				return &waitError{exitTimeout, fmt.Sprintf("not ready after %s (--wait-timeout): %s", elapsed, line)}
			}
			return nil
		}
		if err := sleep(s.ctx, s.o.interval); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func progressLine(counts map[string]int) string {
	keys := slices.Sorted(maps.Keys(counts))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	if len(parts) == 0 {
		return "no slivers"
	}
	return strings.Join(parts, ", ")
}

// manifestNodes describes the slice and returns its nodes.
func (s *session) manifestNodes(slice string) ([]geniclient.ManifestNode, geniclient.Credential, error) {
	var cred geniclient.Credential
	_, r, err := s.sliceCall(slice, "", "", func(a *geniclient.AM, _ string, urns []string, c []geniclient.Credential) (*geniclient.Result, error) {
		cred = c[0]
		return a.Describe(s.ctx, urns, c)
	})
	if err != nil {
		return nil, cred, err
	}
	m, _ := r.Value.(map[string]any)
	rspec, _ := m["geni_rspec"].(string)
	nodes, err := geniclient.ParseManifest(rspec)
	if err != nil {
		return nil, cred, fmt.Errorf("describe at %s: %w", s.agg.Name(), err)
	}
	return nodes, cred, nil
}

// sshCommand is the ssh command line for a manifest login: the system ssh,
// the login's port, user and host, and the private key next to the first
// omni_config user's public key when it is there.
func (s *session) sshCommand(l geniclient.Login, remote []string) []string {
	argv := []string{"ssh"}
	if l.Port != "" && l.Port != "22" {
		argv = append(argv, "-p", l.Port)
	}
	for _, u := range s.cfg.Users {
		for _, k := range u.KeyFiles {
			if priv := strings.TrimSuffix(k, ".pub"); priv != k && fileNotEmpty(priv) {
				argv = append(argv, "-i", priv)
				goto keyed
			}
		}
	}
keyed:
	user := l.Username
	if user == "" && len(s.cfg.Users) > 0 {
		user = s.cfg.Users[0].Name
	}
	target := l.Hostname
	if user != "" {
		target = user + "@" + l.Hostname
	}
	argv = append(argv, target)
	if len(remote) > 0 {
		argv = append(argv, "--")
		argv = append(argv, remote...)
	}
	return argv
}

func sshLogin(s *session, args []string) error {
	if len(s.o.aggregates) > 1 {
		return usagef("ssh logs in at one aggregate: give one -a")
	}
	nodes, _, err := s.manifestNodes(args[0])
	if err != nil {
		return err
	}
	clientID := ""
	if len(args) > 1 {
		clientID = args[1]
	}
	n, err := geniclient.PickNode(nodes, clientID)
	if err != nil {
		return usagef("ssh: %v", err)
	}
	var login *geniclient.Login
	for i, l := range n.Logins {
		if l.Hostname != "" && (l.Authentication == "" || l.Authentication == "ssh-keys") {
			login = &n.Logins[i]
			break
		}
	}
	if login != nil {
		if err := login.Check(); err != nil {
			return fmt.Errorf("node %s at %s: %w", n.ClientID, s.agg.Name(), err)
		}
	}
	if login == nil {
		return &unsupportedError{fmt.Sprintf("node %s at %s has no SSH login in its manifest (no services/login with a hostname): this aggregate does not offer login to it (yet)", n.ClientID, s.agg.Name())}
	}
	argv := s.sshCommand(*login, s.o.dashArgs)
	path, err := exec.LookPath("ssh")
	if err != nil {
		return usagef("no ssh client on PATH (install openssh-client); the command would be: %s", strings.Join(argv, " "))
	}
	fmt.Fprintf(s.log, "geni: %s\n", strings.Join(argv, " "))
	// Hand the terminal to ssh: its exit status becomes ours.
	return syscall.Exec(path, argv, os.Environ())
}

func downloadData(s *session, args []string) error { return s.download(args, "data") }

func downloadLogs(s *session, args []string) error { return s.download(args, "logs") }

// download fetches /data (what == "data") or the start command's output
// ("logs") of the chosen nodes: POST the slice credential to the link the
// manifest gives, as the aggregate documents it.
func (s *session) download(args []string, what string) error {
	nodes, cred, err := s.manifestNodes(args[0])
	if err != nil {
		return err
	}
	if len(args) > 1 {
		n, err := geniclient.PickNode(nodes, args[1])
		if err != nil {
			return usagef("%s: %v", what, err)
		}
		nodes = []geniclient.ManifestNode{n}
	}
	type got struct {
		Node, URL, File, Source string
		Bytes                   int64
	}
	var done []got
	var missing []string
	for _, n := range nodes {
		url, ext := n.DataURL, "-data.tar"
		if what == "logs" {
			url, ext = n.LogURL, "-logs.txt"
		}
		if url == "" {
			missing = append(missing, n.ClientID)
			continue
		}
		if err := geniclient.SameSite(url, s.agg.URL); err != nil {
			return fmt.Errorf("%s of node %s: %w", what, n.ClientID, err)
		}
		part := geniclient.FileNamePart(n.ClientID)
		file := s.names().FileName(geniclient.SliceName(args[0]), geniclient.Aggregate{}, part, ext, 1)
		if s.o.outputFile != "" && len(nodes) > 1 {
			file = part + "-" + s.o.outputFile
		}
		size, source, err := geniclient.Download(s.ctx, s.http, url, cred, file)
		if err != nil {
			return fmt.Errorf("%s of node %s: %w", what, n.ClientID, err)
		}
		done = append(done, got{n.ClientID, url, file, source, size})
		if what == "logs" && !s.o.json && !s.o.output {
			if b, err := os.ReadFile(file); err == nil {
				fmt.Fprintf(s.out, "==> %s (%s) <==\n%s", n.ClientID, file, b)
			}
		}
	}
	if len(nodes) == 0 {
		return &unsupportedError{fmt.Sprintf("slice %s has no slivers at %s (deleted or expired?): the %s of an ended sliver is downloaded from the link its manifest gave, while the aggregate keeps it", args[0], s.agg.Name(), what)}
	}
	if len(done) == 0 {
		offer := map[string]string{"data": "a /data download (no geniam:sliver_data link)", "logs": "the start command's output (no geniam:sliver_log link)"}[what]
		return &unsupportedError{fmt.Sprintf("the manifest at %s gives no node of the slice (%s) %s: this aggregate does not offer it (yet)",
			s.agg.Name(), strings.Join(missing, ", "), offer)}
	}
	if s.o.json {
		printJSONLine(s.out, map[string]any{"command": what, "aggregate": s.agg.Name(), "files": done, "not_offered": missing})
		return nil
	}
	for _, d := range done {
		abs, _ := filepath.Abs(d.File)
		fmt.Fprintf(s.out, "%s of %s: %d bytes in %s%s\n", what, d.Node, d.Bytes, abs, map[bool]string{true: " (" + d.Source + ")", false: ""}[d.Source != ""])
	}
	if len(missing) > 0 {
		fmt.Fprintf(s.out, "not offered for: %s\n", strings.Join(missing, ", "))
	}
	return nil
}
