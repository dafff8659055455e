package provision_test

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent/sshlogin/sshtest"
	"github.com/geniam/geniam/am/provision"
)

// manifestLogin is the first <login> of a manifest.
type manifestLogin struct {
	Auth     string `xml:"authentication,attr"`
	Host     string `xml:"hostname,attr"`
	Port     int    `xml:"port,attr"`
	Username string `xml:"username,attr"`
}

func loginOf(t testing.TB, manifest string) manifestLogin {
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

// sshTo runs OpenSSH's client against a manifest login.
func sshTo(t *testing.T, l manifestLogin, key sshtest.Key, args ...string) (string, int) {
	t.Helper()
	return sshtest.Run(t, key, l.Host, l.Port, l.Username, args...)
}

// waitSSH runs ssh until it exits with want, and returns how long that took.
func waitSSH(t *testing.T, l manifestLogin, key sshtest.Key, want int, within time.Duration, what string, args ...string) time.Duration {
	t.Helper()
	t0 := time.Now()
	for {
		if _, code := sshTo(t, l, key, args...); code == want {
			return time.Since(t0)
		}
		if time.Since(t0) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loginSliver allocates one container of the demo program on node1 in
// slice, provisions it with users in geni_users and waits until it is
// ready. It returns the Provision call (it carries the users), the slice's
// Describe and the manifest's login.
func (e *env) loginSliver(agg *am.Aggregate, call am.Call, slice string, users ...am.User) (am.Call, *am.DescribeResult, manifestLogin) {
	e.t.Helper()
	_, err := agg.Allocate(e.ctx, call, slice, request("/demo -every 1s", [2]string{"a", "node1"}))
	must(e.t, err)
	pcall := call
	pcall.Options.Users, pcall.Options.UsersSet = users, true
	_, err = agg.Provision(e.ctx, pcall, []string{slice})
	must(e.t, err)
	e.waitStates(agg, call, slice, 60*time.Second, "geni_ready", opIs(am.Ready))
	desc, err := agg.Describe(e.ctx, call, []string{slice})
	must(e.t, err)
	return pcall, desc, loginOf(e.t, desc.RSpec)
}

// TestSSHLoginEndToEnd is issue 16's acceptance test for logins: Provision
// with a key in geni_users, ssh to the manifest's login runs a command in
// the container and returns its exit status, another key is refused,
// geni_update_users adds a key that works at once, and after Delete ssh is
// refused. Real engine, PostgreSQL, TLS, credentials and OpenSSH client.
func TestSSHLoginEndToEnd(t *testing.T) {
	needDocker(t)
	sshtest.NeedClient(t)
	e := newEnv(t, "127.0.0.2")
	_, agg := e.served("login", nil)
	slice, call, _ := e.slice("login")
	alice, bob := sshtest.NewKey(t, "alice"), sshtest.NewKey(t, "bob")
	aliceURN, bobURN := "urn:publicid:IDN+geniam.test+user+alice", "urn:publicid:IDN+geniam.test+user+bob"

	t0 := time.Now()
	_, desc, l := e.loginSliver(agg, call, slice, am.User{URN: aliceURN, Keys: []string{alice.Public}})
	if l.Auth != "ssh-keys" || l.Host != "127.0.0.2" || l.Port != e.agents[0].cfg.LoginPort || l.Username != provision.AgentID(desc.Slivers[0].URN) {
		t.Fatalf("manifest login %+v; want ssh-keys on 127.0.0.2:%d as the sliver id", l, e.agents[0].cfg.LoginPort)
	}
	out, code := sshTo(t, l, alice, "/demo", "-once", "-exit", "3")
	t.Logf("Provision → first ssh command answered: %s", time.Since(t0).Round(time.Millisecond))
	if code != 3 || !strings.Contains(out, "geni-demo-container") {
		t.Fatalf("ssh ran the command with exit %d, output %q; want 3 and the program's greeting", code, out)
	}
	if out, code := sshTo(t, l, bob, "/demo", "-once"); code != 255 {
		t.Fatalf("bob's key, not in geni_users, got in: exit %d %q", code, out)
	}

	ucall := call
	ucall.Options.Users, ucall.Options.UsersSet = []am.User{{URN: aliceURN, Keys: []string{alice.Public}}, {URN: bobURN, Keys: []string{bob.Public}}}, true
	_, err := agg.PerformOperationalAction(e.ctx, ucall, []string{slice}, am.ActionUpdateUsers)
	must(t, err)
	took := waitSSH(t, l, bob, 0, 10*time.Second, "bob's key added by geni_update_users logs in", "/demo", "-once")
	t.Logf("geni_update_users → the new key logs in: %s", took.Round(time.Millisecond))

	_, err = agg.Delete(e.ctx, call, []string{slice})
	must(t, err)
	took = waitSSH(t, l, alice, 255, 20*time.Second, "ssh refused after Delete", "/demo", "-once")
	t.Logf("Delete → ssh refused: %s", took.Round(time.Millisecond))
}

// TestSSHThroughGate is issue 15's acceptance test for SSH: the keys an
// agent holds are the gate's decision (a user on the operator's deny list
// gets none pushed, and when the aggregate restarts with them on it, the
// keys are withdrawn and their logins refused), and every session's start
// and end become audit rows (method SSH) naming the user whose key it was,
// one each however many aggregate processes read them from the agent.
func TestSSHThroughGate(t *testing.T) {
	needDocker(t)
	sshtest.NeedClient(t)
	e := newEnv(t, "127.0.0.2")
	alice, mallory := sshtest.NewKey(t, "alice"), sshtest.NewKey(t, "mallory")
	aliceURN, malloryURN := "urn:publicid:IDN+geniam.test+user+alice", "urn:publicid:IDN+geniam.test+user+mallory"
	gated := func(owner string, deny ...string) (stop func(), agg *am.Aggregate) {
		p := e.provisioner(owner, nil)
		p.UseGate(am.NewGate(am.GateConfig{Authorizer: e.verifier, Slices: e.st, Ops: &am.OpsPolicy{Deny: deny}}))
		return e.runProvisioner(p), e.aggregate(p)
	}

	// First no deny list: both keys are pushed, both log in.
	stop, agg := gated("open")
	slice, call, _ := e.slice("gated")
	pcall, desc, l := e.loginSliver(agg, call, slice, am.User{URN: aliceURN, Keys: []string{alice.Public}},
		am.User{URN: malloryURN, Keys: []string{mallory.Public}})
	if _, code := sshTo(t, l, alice, "/demo", "-once", "-exit", "3"); code != 3 {
		t.Fatalf("alice's ssh: exit %d, want 3", code)
	}
	if _, code := sshTo(t, l, mallory, "/demo", "-once"); code != 0 {
		t.Fatalf("mallory's ssh before the deny list: exit %d", code)
	}

	// Each session's start and end is a row, within a moment, naming whose
	// key it was; the two share the session's log id.
	const sshRows = `SELECT count(*) FROM audit_log WHERE method = 'SSH' AND user_urn = $1 AND caller_urn = $1
		AND slice_urn = $2 AND sliver_urns = ARRAY[$3] AND options->>'key' LIKE 'SHA256:%' AND remote_addr LIKE '127.0.0.1:%'`
	sliver := desc.Slivers[0].URN
	ended := time.Now()
	e.waitCount(10*time.Second, 50*time.Millisecond, "alice's session start and end in audit_log", func(n int) bool { return n == 2 },
		sshRows, aliceURN, slice, sliver)
	t.Logf("ssh session ended → its audit rows in audit_log: %s", time.Since(ended).Round(time.Millisecond))
	var logID, output string
	var sessions int
	must(t, e.st.Pool().QueryRow(e.ctx, `SELECT min(log_id), max(output), count(DISTINCT log_id) FROM audit_log
		WHERE method = 'SSH' AND user_urn = $1 AND options->>'event' = 'end' AND options->>'exit_status' = '3'`, aliceURN).Scan(&logID, &output, &sessions))
	if sessions != 1 || !strings.Contains(output, "exit status 3") {
		t.Errorf("alice's session end: %d sessions, %q", sessions, output)
	}
	e.waitCount(10*time.Second, 50*time.Millisecond, "mallory's session in audit_log", func(n int) bool { return n == 2 },
		sshRows, malloryURN, slice, sliver)

	// The operator puts mallory on the deny list and restarts: the keys
	// are withdrawn at once, alice's stay.
	stop()
	_, agg = gated("denied", malloryURN)
	took := waitSSH(t, l, mallory, 255, 20*time.Second, "mallory refused after the restart with the deny list", "/demo", "-once")
	t.Logf("restart with the deny list → mallory's login refused: %s", took.Round(time.Millisecond))
	if _, code := sshTo(t, l, alice, "/demo", "-once"); code != 0 {
		t.Errorf("alice's ssh after mallory's keys went: exit %d", code)
	}
	// geni_update_users cannot push them again.
	_, err := agg.PerformOperationalAction(e.ctx, pcall, []string{slice}, am.ActionUpdateUsers)
	must(t, err)
	e.waitCount(20*time.Second, 100*time.Millisecond, "the update_users job done", func(n int) bool { return n == 1 },
		`SELECT count(*) FROM jobs WHERE kind = 'update_users' AND state = 'done' AND sliver_urn = $1`, sliver)
	if _, code := sshTo(t, l, mallory, "/demo", "-once"); code != 255 {
		t.Errorf("mallory's ssh after geni_update_users: exit %d, want 255", code)
	}
	// The second process read the sessions from the agent too: still one
	// row per event.
	if n := e.waitCount(time.Second, 50*time.Millisecond, "", func(int) bool { return true },
		`SELECT count(*) FROM audit_log WHERE method = 'SSH' AND log_id = $1`, logID); n != 2 {
		t.Errorf("alice's first session has %d rows, want 2 (start, end)", n)
	}
}
