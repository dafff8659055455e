package rspec

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
)

const runExample = `
  <geniam:run restart="on-failure" max_retries="3" time_limit="3600">
    <geniam:env name="RATE" value="10 per second"/>
    <geniam:arg>/prog</geniam:arg><geniam:arg>-out</geniam:arg><geniam:arg>a b &amp; c</geniam:arg>
  </geniam:run>`

// <geniam:run> is parsed, valid against our schema, and echoed as granted
// in a manifest that is valid too.
func TestRunMode(t *testing.T) {
	r := newTestRSpecs(t, nil)
	doc := req(containerNode("a", runExample))
	got, err := r.ParseRequest(doc)
	if err != nil {
		t.Fatal(err)
	}
	want := am.Run{Restart: am.RestartOnFailure, MaxRetries: 3, TimeLimit: 3600, Env: []string{"RATE=10 per second"}, Args: []string{"/prog", "-out", "a b & c"}}
	run := got.Slivers[0].Run
	if run == nil || run.Restart != want.Restart || run.MaxRetries != 3 || run.TimeLimit != 3600 || !slices.Equal(run.Env, want.Env) || !slices.Equal(run.Args, want.Args) {
		t.Fatalf("parsed %+v, want %+v", run, want)
	}
	s := am.Sliver{URN: "urn:publicid:IDN+geniam.test+sliver+a1", ClientID: "a", NodeName: "node1", SliverType: am.SliverTypeContainer,
		Image: got.Slivers[0].Image, Run: run, NodeXML: got.Slivers[0].NodeXML, Allocation: am.Provisioned, Operational: am.Ready,
		Expires: testNow, StdoutTail: "line 1\nline \x1b[1m2\n", StderrTail: "oops\n"}
	m, err := r.Manifest("urn:publicid:IDN+geniam.test+slice+s", []am.Sliver{s}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(m, "<geniam:run ") != 1 || !strings.Contains(m, `<geniam:arg>a b &amp; c</geniam:arg>`) || !strings.Contains(m, "<geniam:stderr>oops") {
		t.Fatalf("manifest does not echo the run mode and output once:\n%s", m)
	}
	v := newValidator(t) // skips when xmllint or the GENI schemas are missing
	v.validate(t, "request", doc)
	v.validate(t, "manifest", m)
}

func TestRunModeRefusals(t *testing.T) {
	r := newTestRSpecs(t, nil)
	for _, c := range []struct{ extra, want string }{
		{`<geniam:run restart="sometimes"/>`, "restart"},
		{`<geniam:run max_retries="2"/>`, "on-failure"},
		{`<geniam:run time_limit="-1"/>`, "time_limit"},
		{`<geniam:run time_limit="99999999999"/>`, "time_limit"},
		{`<geniam:run><geniam:env name="1X" value="v"/></geniam:run>`, "env"},
		{`<geniam:run><geniam:env name="X"/></geniam:run>`, "env"},
		{`<geniam:run><geniam:arg></geniam:arg></geniam:run>`, "empty"},
		{`<geniam:run><geniam:cmd>x</geniam:cmd></geniam:run>`, "unknown element"},
		{`<geniam:run/><geniam:run/>`, "two geniam:run"},
		{`<geniam:run><geniam:arg>/prog</geniam:arg></geniam:run><services><execute shell="sh" command="x"/></services>`, "not both"},
	} {
		_, err := r.ParseRequest(req(containerNode("a", c.extra)))
		if am.CodeOf(err) != am.BadArgs || !strings.Contains(am.MessageOf(err), c.want) {
			t.Errorf("%s: got %v, want BADARGS naming %q", c.extra, err, c.want)
		}
	}
}

// The idle policy is stated in the advertisement and in the manifests of
// provisioned slivers, valid against our schema.
func TestIdlePolicyStated(t *testing.T) {
	r := newTestRSpecs(t, func(c *Config) { c.IdleStop, c.IdleWarn = 2*time.Hour, 10*time.Minute })
	ad, err := r.Advertisement(testNodes()[:1], false, testNow)
	if err != nil {
		t.Fatal(err)
	}
	want := `<geniam:idle_policy stop_after="7200" warn_before="600"/>`
	if !strings.Contains(ad, want) {
		t.Fatalf("advertisement lacks %s:\n%s", want, ad)
	}
	s := am.Sliver{URN: "urn:publicid:IDN+geniam.test+sliver+a1", ClientID: "a", NodeName: "node1", SliverType: am.SliverTypeContainer,
		Image: am.Image{URL: "https://img.example.org/a.tar", SHA256: digest}, Allocation: am.Provisioned, Operational: am.Ready, Expires: testNow}
	m, err := r.Manifest("urn:publicid:IDN+geniam.test+slice+s", []am.Sliver{s}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m, want) {
		t.Fatalf("manifest lacks %s:\n%s", want, m)
	}
	v := newValidator(t)
	v.validate(t, "ad", ad)
	v.validate(t, "manifest", m)
}
