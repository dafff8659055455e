package provision

import (
	"context"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

func TestStartRequest(t *testing.T) {
	cases := []struct {
		execute []am.Execute
		command []string
		shell   string
	}{
		{nil, nil, ""},
		{[]am.Execute{{Shell: "sh", Command: "echo hi > /data/x"}}, nil, "echo hi > /data/x"},
		{[]am.Execute{{Shell: "exec", Command: " /demo  -once -exit 3 "}}, []string{"/demo", "-once", "-exit", "3"}, ""},
		{[]am.Execute{{Shell: "NONE", Command: "/prog"}, {Shell: "sh", Command: "ignored"}}, []string{"/prog"}, ""},
	}
	for _, c := range cases {
		s := &am.Sliver{URN: "urn:publicid:IDN+a+sliver+x", SliceURN: "urn:publicid:IDN+a+slice+s", Execute: c.execute,
			Users: []am.User{{URN: "u", Keys: []string{"ssh-ed25519 AAAA k"}}}}
		req, err := startRequest(s, agentUsers(s.Users), "<rspec/>", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(req.Command, "|") != strings.Join(c.command, "|") || req.Shell != c.shell || len(req.Users) != 1 || req.Manifest != "<rspec/>" {
			t.Errorf("%v: %+v", c.execute, req)
		}
	}
	// A key with a line break would smuggle a second authorized_keys entry.
	s := &am.Sliver{Users: []am.User{{URN: "u", Keys: []string{"ssh-rsa A\ncommand=\"x\" ssh-rsa B"}}}}
	if _, err := startRequest(s, agentUsers(s.Users), "", 0, 0); am.CodeOf(err) != am.BadArgs {
		t.Errorf("a key with a newline: %v", err)
	}
}

func TestSliverUpdate(t *testing.T) {
	three := 3
	cases := []struct {
		st   agent.Status
		op   am.OperationalState
		res  string
		errs string
	}{
		{agent.Status{State: agent.StateRunning}, am.Ready, "running", ""},
		{agent.Status{State: agent.StateExited, ExitCode: &three}, am.Ready, "finished with exit code 3", ""},
		{agent.Status{State: agent.StateStopped}, am.NotReady, "stopped", ""},
		{agent.Status{State: agent.StateFailed, Reason: "fetch failed: sha256 mismatch"}, am.Failed, "failed", "agent on n1: fetch failed: sha256 mismatch"},
		{agent.Status{State: agent.StateFetching}, am.Configuring, "fetching", ""},
		{agent.Status{State: agent.StateRunning, Data: &agent.DataUsage{UsedBytes: 1000, LimitBytes: 1024, OverQuota: true}},
			am.Ready, "running; /data over quota (1000 of 1024 bytes used)", ""},
	}
	for _, c := range cases {
		u := sliverUpdate(c.st, "n1", "https://127.0.0.9:1887")
		if u.Operational != c.op || *u.ResourceMsg != c.res || *u.Error != c.errs {
			t.Errorf("%s: %s %q %q", c.st.State, u.Operational, *u.ResourceMsg, *u.Error)
		}
	}
}

// FuzzAgentID: any sliver URN maps to a valid agent id, and the names
// the data handler accepts are exactly those ids.
func FuzzAgentID(f *testing.F) {
	for _, s := range []string{"urn:publicid:IDN+geniam.localhost+sliver+c9aaa74e8e9fea3c", "urn:publicid:IDN+x+sliver+../../etc", "", "+", "a+b c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, urn string) {
		id := AgentID(urn)
		if err := agent.ValidID(id); err != nil {
			t.Fatalf("AgentID(%q) = %q: %v", urn, id, err)
		}
		if agentIDOK(id) != nil {
			t.Fatalf("the data handler refuses the id %q", id)
		}
		if agentIDOK(urn) == nil && agent.ValidID(urn) != nil {
			t.Fatalf("the data handler accepts %q", urn)
		}
	})
}

// FuzzCredentialOf: the /data request body, raw XML or omni's JSON file.
func FuzzCredentialOf(f *testing.F) {
	f.Add([]byte(`<?xml version="1.0"?><signed-credential/>`))
	f.Add([]byte(`{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "<signed-credential/>"}`))
	f.Add([]byte(`{"geni_value": ""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c := credentialOf(body)
		if c.Value == "" && len(body) > 0 && !strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
			t.Fatalf("body %q gave an empty credential", body)
		}
	})
}

// TestDeletedWakesForTeardowns: only a deleted sliver that had been
// provisioned has a teardown queued, so only it wakes a worker; deleting
// allocations (an Allocate+Delete loop) costs no job query.
func TestDeletedWakesForTeardowns(t *testing.T) {
	p := &Provisioner{wakeC: make(chan struct{}, 1)}
	woken := func() bool {
		select {
		case <-p.wakeC:
			return true
		default:
			return false
		}
	}
	p.Deleted(context.Background(), []am.Sliver{{Allocation: am.Allocated}, {Allocation: am.Allocated}})
	if woken() {
		t.Error("deleting allocations woke a worker")
	}
	p.Deleted(context.Background(), []am.Sliver{{Allocation: am.Allocated}, {Allocation: am.Provisioned}})
	if !woken() {
		t.Error("deleting a provisioned sliver did not wake a worker")
	}
}
