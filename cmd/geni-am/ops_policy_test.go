package main

import (
	"testing"

	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/store"
)

func TestPolicyFromConfig(t *testing.T) {
	o := &opsSide{}
	p, err := o.policy(config.Operations{Allow: "ch.geni.net, ch.geni.net:*", Deny: "urn:publicid:IDN+bad+user+*",
		MaxSliversPerUser: 5, UserLimits: "urn:publicid:IDN+ch.geni.net+user+alice=50",
		ProjectLimits: "ch.geni.net:big=500,ch.geni.net:small=2"}, &store.Store{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Allow) != 2 || len(p.Deny) != 1 || p.UserLimits["urn:publicid:IDN+ch.geni.net+user+alice"] != 50 ||
		p.ProjectLimits["ch.geni.net:small"] != 2 || p.MaintenanceFrom == nil || p.Counter == nil {
		t.Fatalf("policy %+v", p)
	}
	for _, bad := range []config.Operations{
		{UserLimits: "alice"},
		{ProjectLimits: "p=-1"},
		{ProjectLimits: "p=x"},
		{Deny: "[unclosed"},
	} {
		if _, err := o.policy(bad, &store.Store{}); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}
