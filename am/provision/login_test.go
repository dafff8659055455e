package provision_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/provision"
)

// manifestLogin is the first <login> of a manifest.
type manifestLogin struct {
	Auth     string `xml:"authentication,attr"`
	Host     string `xml:"hostname,attr"`
	Port     int    `xml:"port,attr"`
	Username string `xml:"username,attr"`
}

func loginOf(t *testing.T, manifest string) manifestLogin {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(manifest))
	for {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("the manifest has no <login>: %v\n%s", err, manifest)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "login" {
			var l manifestLogin
			must(t, dec.DecodeElement(&l, &se))
			return l
		}
	}
}

// userKey writes an ed25519 key for ssh -i and returns the file and the
// public key in authorized_keys form.
func userKey(t *testing.T, name string) (file, public string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	block, err := ssh.MarshalPrivateKey(priv, name)
	must(t, err)
	file = filepath.Join(t.TempDir(), name)
	must(t, os.WriteFile(file, pem.EncodeToMemory(block), 0o600))
	spub, err := ssh.NewPublicKey(pub)
	must(t, err)
	return file, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))) + " " + name
}

// sshTo runs OpenSSH's client against a manifest login; 255 is ssh's own
// failure (a refused key among them).
func sshTo(t *testing.T, l manifestLogin, key string, args ...string) (string, int) {
	t.Helper()
	argv := append([]string{"-F", "/dev/null", "-i", key, "-p", strconv.Itoa(l.Port), "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", l.Username + "@" + l.Host}, args...)
	var out bytes.Buffer
	cmd := exec.Command("ssh", argv...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	}
	t.Fatalf("ssh: %v", err)
	return "", -1
}

// TestSSHLoginEndToEnd is issue 16's acceptance test for logins: Provision
// with a key in geni_users, ssh to the manifest's login runs a command in
// the container and returns its exit status, another key is refused,
// geni_update_users adds a key that works at once, and after Delete ssh is
// refused. Real engine, PostgreSQL, TLS, credentials and OpenSSH client.
func TestSSHLoginEndToEnd(t *testing.T) {
	needDocker(t)
	if _, err := exec.LookPath("ssh"); err != nil {
		if os.Getenv("GENIAM_REQUIRE_DOCKER") == "1" {
			t.Fatal("the ssh client (openssh-client) is required")
		}
		t.Skip("no ssh client (openssh-client)")
	}
	e := newEnv(t, "127.0.0.2")
	p := e.provisioner("login", nil)
	e.runProvisioner(p)
	agg := e.aggregate(p)
	slice, call, _ := e.slice("login")
	aliceKey, alicePub := userKey(t, "alice")
	bobKey, bobPub := userKey(t, "bob")
	aliceURN, bobURN := "urn:publicid:IDN+geniam.test+user+alice", "urn:publicid:IDN+geniam.test+user+bob"

	_, err := agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", [2]string{"a", "node1"}))
	must(t, err)
	pcall := call
	pcall.Options.Users, pcall.Options.UsersSet = []am.User{{URN: aliceURN, Keys: []string{alicePub}}}, true
	t0 := time.Now()
	_, err = agg.Provision(e.ctx, pcall, []string{slice})
	must(t, err)
	e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
	desc, err := agg.Describe(e.ctx, call, []string{slice})
	must(t, err)
	l := loginOf(t, desc.RSpec)
	if l.Auth != "ssh-keys" || l.Host != "127.0.0.2" || l.Port != e.agents[0].cfg.LoginPort || l.Username != provision.AgentID(desc.Slivers[0].URN) {
		t.Fatalf("manifest login %+v; want ssh-keys on 127.0.0.2:%d as the sliver id", l, e.agents[0].cfg.LoginPort)
	}
	out, code := sshTo(t, l, aliceKey, "/demo", "-once", "-exit", "3")
	t.Logf("Provision → first ssh command answered: %s", time.Since(t0).Round(time.Millisecond))
	if code != 3 || !strings.Contains(out, "geni-demo-container") {
		t.Fatalf("ssh ran the command with exit %d, output %q; want 3 and the program's greeting", code, out)
	}
	if out, code := sshTo(t, l, bobKey, "/demo", "-once"); code != 255 {
		t.Fatalf("bob's key, not in geni_users, got in: exit %d %q", code, out)
	}

	ucall := call
	ucall.Options.Users, ucall.Options.UsersSet = []am.User{{URN: aliceURN, Keys: []string{alicePub}}, {URN: bobURN, Keys: []string{bobPub}}}, true
	t1 := time.Now()
	_, err = agg.PerformOperationalAction(e.ctx, ucall, []string{slice}, am.ActionUpdateUsers)
	must(t, err)
	for {
		if _, code := sshTo(t, l, bobKey, "/demo", "-once"); code == 0 {
			break
		}
		if time.Since(t1) > 10*time.Second {
			t.Fatal("bob's key added by geni_update_users did not work within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("geni_update_users → the new key logs in: %s", time.Since(t1).Round(time.Millisecond))

	t2 := time.Now()
	_, err = agg.Delete(e.ctx, call, []string{slice})
	must(t, err)
	for {
		if _, code := sshTo(t, l, aliceKey, "/demo", "-once"); code == 255 {
			break
		}
		if time.Since(t2) > 20*time.Second {
			t.Fatal("ssh still got in 20 s after Delete")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("Delete → ssh refused: %s", time.Since(t2).Round(time.Millisecond))
}
