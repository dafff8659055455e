package am

import (
	"strings"
	"testing"
	"time"
)

func TestMergeUsers(t *testing.T) {
	have := []User{{URN: "a", Keys: []string{"k1"}}, {URN: "b", Keys: []string{"k2"}}}
	got := mergeUsers(have, []User{{URN: "b", Keys: []string{"k3"}}, {URN: "c", Keys: nil}})
	var s []string
	for _, u := range got {
		s = append(s, u.URN+"="+strings.Join(u.Keys, ","))
	}
	if strings.Join(s, " ") != "a=k1 b=k3 c=" {
		t.Errorf("merged %v", s)
	}
	if have[1].Keys[0] != "k2" {
		t.Error("mergeUsers changed its input")
	}
}

func TestActionTransitions(t *testing.T) {
	cases := []struct {
		action string
		from   OperationalState
		to     OperationalState // "" means refused
		code   Code
	}{
		{ActionStart, NotReady, Ready, Success},
		{ActionStart, Ready, Ready, Success},
		{ActionStart, Configuring, Ready, Success}, // geni_start right after Provision (omni does it) waits for the provisioning
		{ActionStop, Ready, NotReady, Success},
		{ActionStop, Stopping, "", Unsupported},
		{ActionRestart, Ready, Ready, Success},
		{ActionRestart, NotReady, "", Unsupported},
		{ActionUpdateUsers, NotReady, "", Refused},
		{ActionUpdateUsers, Ready, Ready, Success},
	}
	opts := Options{UsersSet: true, Users: []User{{URN: "u"}}}
	for _, c := range cases {
		tr, err := actionTransition(c.action, opts)
		if err != nil {
			t.Fatal(err)
		}
		s := Sliver{URN: "urn:publicid:IDN+a+sliver+x", Operational: c.from}
		err = tr(&s)
		if CodeOf(err) != c.code || (c.to != "" && s.Operational != c.to) {
			t.Errorf("%s from %s: %v, now %s", c.action, c.from, err, s.Operational)
		}
	}
	if _, err := actionTransition("", opts); CodeOf(err) != BadArgs {
		t.Errorf("empty action: %v", err)
	}
	if _, err := actionTransition(ActionUpdateUsers, Options{}); CodeOf(err) != BadArgs {
		t.Errorf("update_users without geni_users: %v", err)
	}
}

func TestEarliest(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := earliest(t0.Add(time.Hour), time.Time{}, t0.Add(time.Minute)); !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("earliest = %v", got)
	}
}
