// Package sshtest helps tests log in with the real OpenSSH client: a key
// pair on disk, one `ssh` run with its output and exit status, and the
// command lines of ssh, scp and sftp with the same options.
package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Key is a client key: the private key file for ssh -i and the public key
// in authorized_keys form (with the name as comment).
type Key struct {
	File, Public string
}

// NewKey writes a fresh ed25519 key into a test directory.
func NewKey(t testing.TB, name string) Key {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return Key{File: file, Public: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))) + " " + name}
}

// NeedClient skips the test without an ssh client, or fails it when
// GENIAM_REQUIRE_DOCKER=1 (CI installs openssh-client).
func NeedClient(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err == nil {
		return
	}
	if os.Getenv("GENIAM_REQUIRE_DOCKER") == "1" {
		t.Fatal("the ssh client (openssh-client) is required")
	}
	t.Skip("no ssh client (openssh-client)")
}

// options are what every client run here is given: no configuration
// file, key and no other, no prompts, any host key, no noise.
func options(key Key) []string {
	return []string{"-F", "/dev/null", "-i", key.File, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"}
}

// Command is the ssh command line for user@host:port with key, running args.
func Command(key Key, host string, port int, user string, args ...string) *exec.Cmd {
	argv := append(options(key), "-p", strconv.Itoa(port), "-o", "ConnectTimeout=10", user+"@"+host)
	return exec.Command("ssh", append(argv, args...)...)
}

// Transfer is the command line of program (scp or sftp) with key on port,
// copying between the files args names (a remote one as user@host:path).
func Transfer(program string, key Key, port int, args ...string) *exec.Cmd {
	argv := append(options(key), "-P", strconv.Itoa(port))
	return exec.Command(program, append(argv, args...)...)
}

// Run runs ssh and returns its output (stdout and stderr) and exit status;
// 255 is ssh's own failure, a refused key among them.
func Run(t testing.TB, key Key, host string, port int, user string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd := Command(key, host, port, user, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("running ssh: %v", err)
	return "", -1
}
