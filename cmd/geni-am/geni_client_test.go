package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
)

// geniRun is one run of the geni binary.
type geniRun struct {
	stdout, stderr string
	code           int
}

// geniWalk is the geni binary pointed at a served aggregate and the dev
// clearinghouse through the omni_config make run writes.
type geniWalk struct {
	t          *testing.T
	bin, dir   string
	omniConfig string
	s          *served
	path       string // put first on PATH (a stand-in ssh)
}

// useNodeAgent builds geni-nodeagent for the dev agents this test starts.
func useNodeAgent(t *testing.T) {
	bin := amtest.GoBuild(t, "github.com/geniam/geniam/cmd/geni-nodeagent")
	saved := nodeAgentProgram
	nodeAgentProgram = func() (string, error) { return bin, nil }
	t.Cleanup(func() { nodeAgentProgram = saved })
}

func newGeniWalk(t *testing.T) *geniWalk {
	t.Helper()
	return geniWalkOn(t, serveForTest(t))
}

// geniWalkOn starts the dev clearinghouse for the served aggregate s.
func geniWalkOn(t *testing.T, s *served) *geniWalk {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	chAddr := freeAddr(t)
	if err := devenv.ServeCH(ctx, chAddr, s.pki, devenv.AMURN, s.amURL, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	w := &geniWalk{t: t, bin: amtest.GoBuild(t, "github.com/geniam/geniam/cmd/geni"), dir: t.TempDir(), s: s}
	w.omniConfig = filepath.Join(t.TempDir(), "omni_config")
	if err := devenv.WriteOmniConfig(w.omniConfig, s.pki, s.amURL, "https://"+chAddr+"/"); err != nil {
		t.Fatal(err)
	}
	return w
}

// run runs geni -c omni_config ARGS in the walk's directory (where -o files land).
func (w *geniWalk) run(args ...string) geniRun {
	w.t.Helper()
	cmd := exec.Command(w.bin, append([]string{"-c", w.omniConfig}, args...)...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "HOME="+w.dir)
	if w.path != "" {
		cmd.Env = append(cmd.Env, "PATH="+w.path+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	var r geniRun
	r.stdout, r.stderr, r.code = amtest.Run(w.t, cmd)
	return r
}

// ok runs geni and wants exit 0 and each of want in its stdout.
func (w *geniWalk) ok(args []string, want ...string) geniRun {
	w.t.Helper()
	r := w.run(args...)
	if r.code != 0 {
		w.t.Fatalf("geni %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	for _, s := range want {
		if !strings.Contains(r.stdout, s) {
			w.t.Errorf("geni %s: stdout lacks %q:\n%s", strings.Join(args, " "), s, r.stdout)
		}
	}
	return r
}

// fails runs geni and wants exit code and each of want in its stderr.
func (w *geniWalk) fails(code int, args []string, want ...string) geniRun {
	w.t.Helper()
	r := w.run(args...)
	if r.code != code {
		w.t.Fatalf("geni %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	for _, s := range want {
		if !strings.Contains(r.stderr, s) {
			w.t.Errorf("geni %s: stderr lacks %q:\n%s", strings.Join(args, " "), s, r.stderr)
		}
	}
	return r
}

func (w *geniWalk) file(name string) []byte {
	w.t.Helper()
	b, err := os.ReadFile(filepath.Join(w.dir, name))
	if err != nil {
		w.t.Fatalf("-o file: %v (files: %v)", err, w.files())
	}
	return b
}

func (w *geniWalk) files() []string {
	var names []string
	entries, _ := os.ReadDir(w.dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// omniSample reads one of omni's saved outputs (omni-samples of the lab,
// copied next to the client package).
func omniSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "am", "geniclient", "testdata", "omni-samples", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleValue is the value of one of omni-samples' raw return structs.
func sampleValue(t *testing.T, name string) any {
	t.Helper()
	var ret struct{ Value any }
	if err := json.Unmarshal(omniSample(t, name), &ret); err != nil {
		t.Fatal(err)
	}
	return ret.Value
}

// sameShape checks that got has every member sample has (recursively,
// arrays by their first element), except the gcf-only members in optional.
func sameShape(t *testing.T, what string, sample, got any, optional ...string) {
	t.Helper()
	skip := map[string]bool{}
	for _, o := range optional {
		skip[o] = true
	}
	var walk func(path string, s, g any)
	walk = func(path string, s, g any) {
		switch sv := s.(type) {
		case map[string]any:
			gv, ok := g.(map[string]any)
			if !ok {
				t.Errorf("%s: %s is %T, omni's is a struct", what, path, g)
				return
			}
			for k, v := range sv {
				if skip[k] {
					continue
				}
				if _, ok := gv[k]; !ok {
					t.Errorf("%s: %s lacks %s, which omni's has", what, path, k)
					continue
				}
				walk(path+"."+k, v, gv[k])
			}
		case []any:
			gv, ok := g.([]any)
			if !ok || len(gv) == 0 {
				t.Errorf("%s: %s is %T (%v), omni's is a list", what, path, g, g)
				return
			}
			if len(sv) > 0 {
				walk(path+"[0]", sv[0], gv[0])
			}
		}
	}
	walk("value", sample, got)
}

func jsonFile(t *testing.T, name string, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", name, err, b)
	}
	return v
}

// omniCredFile is the form of omni -V3 -o credential files.
var omniCredFile = regexp.MustCompile(`^\{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "(\\"|[^"])*<signed-credential(\\"|[^"])*"\}\n$`)

// TestGeniWalkthrough runs the geni binary through the walkthrough of
// docs/experimenter.md against a served aggregate and the dev
// clearinghouse (omni_config as make run writes it), and holds each -o file
// against the one omni saved for the same verb (omni-samples).
func TestGeniWalkthrough(t *testing.T) {
	w := newGeniWalk(t)
	request := examplePath(t, "request-one-container.xml")
	const server = "geniam-localhost" // omni's short name of urn:publicid:IDN+geniam.localhost+authority+am

	w.ok([]string{"-V3", "-a", "geniam", "-o", "getversion"}, "AM geniam ("+w.s.amURL+") has version:", "geni_api ", "geni_request_rspec_versions")
	gv := jsonFile(t, "getversion", w.file("getversion-"+server+".json"))
	var omniVersion map[string]any
	if err := json.Unmarshal(omniSample(t, "getversion.json"), &omniVersion); err != nil {
		t.Fatal(err)
	}
	sameShape(t, "getversion", omniVersion["value"], gv, "geni_am_type", "geni_am_code")
	// omni's own -o file of getversion (Python pprint text): the same members.
	for _, m := range regexp.MustCompile(`(?m)^[{ ]   '(geni_\w+)':`).FindAllStringSubmatch(string(omniSample(t, "getversion-omni-o-output.txt")), -1) {
		if _, ok := gv.(map[string]any)[m[1]]; !ok && m[1] != "geni_am_code" && m[1] != "geni_am_type" {
			t.Errorf("getversion file lacks %s, which omni's -o file has", m[1])
		}
	}

	w.ok([]string{"-V3", "-a", "geniam", "-o", "listresources"}, "geniam advertises 3 nodes", "NODE", "AVAILABLE")
	ad := string(w.file("rspec-" + server + ".xml"))
	omniHeader := regexp.MustCompile(`^<\?xml[^>]*\?>\n  <!-- Resources at AM:\n\tURN: (\S+)\n\tURL: (\S+)\n -->\n  `)
	if m := omniHeader.FindStringSubmatch(string(omniSample(t, "advertisement-omni-o-output.xml"))); m == nil {
		t.Fatal("the pattern does not match omni's own listresources -o file")
	}
	if m := omniHeader.FindStringSubmatch(ad); m == nil || m[1] != devenv.AMURN || m[2] != w.s.amURL {
		t.Errorf("rspec file does not start as omni's does: %.300q", ad)
	}

	w.ok([]string{"-V3", "-o", "getusercred"}, "user credential for "+devenv.UserURN, "alice-geniam-usercred.json")
	if !omniCredFile.Match(omniSample(t, "usercred-omni-o-output.json")) {
		t.Fatal("the pattern does not match omni's own usercred file")
	}
	if uc := w.file("alice-geniam-usercred.json"); !omniCredFile.Match(uc) {
		t.Errorf("usercred file is not in omni's form: %.200q", uc)
	}

	w.ok([]string{"-V3", "-a", "geniam", "createslice", "walk"}, "Created slice with Name walk, URN urn:publicid:IDN+geniam.localhost+slice+walk",
		"Next: geni -c "+w.omniConfig+" -a geniam allocate walk REQUEST.xml")
	w.ok([]string{"-V3", "-o", "getslicecred", "walk"}, "slice credential for urn:publicid:IDN+geniam.localhost+slice+walk", "walk-cred.json")
	if !omniCredFile.Match(omniSample(t, "slicecred-omni-o-output.json")) {
		t.Fatal("the pattern does not match omni's own slice credential file")
	}
	if sc := w.file("walk-cred.json"); !omniCredFile.Match(sc) {
		t.Errorf("slice credential file is not in omni's form: %.200q", sc)
	}

	// The AM calls reuse the saved slice credential, as omni does with --slicecredfile.
	r := w.ok([]string{"-V3", "-a", "geniam", "--slicecredfile", "walk-cred.json", "-o", "allocate", "walk", request},
		"Allocated 1 slivers in slice urn:publicid:IDN+geniam.localhost+slice+walk at geniam", "worker", "allocated", "pending_allocation",
		"Next: provision before the hold expires: geni -c "+w.omniConfig+" -a geniam provision walk")
	if !strings.Contains(r.stderr, "using the slice credential in walk-cred.json") {
		t.Errorf("the saved slice credential was not used:\n%s", r.stderr)
	}
	alloc := jsonFile(t, "allocate", w.file("walk-allocate-"+server+".json"))
	sameShape(t, "allocate", sampleValue(t, "allocate-return.json"), alloc, "geni_start_time", "geni_end_time", "geni_error")
	// omni's own -o file of allocate: the same members, the same sliver members.
	omniAlloc := string(omniSample(t, "allocate-omni-o-output.txt"))
	for _, m := range regexp.MustCompile(`(?m)^ +"(geni_\w+)":`).FindAllStringSubmatch(omniAlloc, -1) {
		switch m[1] {
		case "geni_start_time", "geni_end_time", "geni_error": // gcf's extras
		default:
			if !strings.Contains(string(w.file("walk-allocate-"+server+".json")), `"`+m[1]+`":`) {
				t.Errorf("allocate file lacks %s, which omni's -o file has", m[1])
			}
		}
	}

	w.ok([]string{"-V3", "-a", "geniam", "-o", "provision", "walk"}, "Provisioned 1 slivers", "(SSH keys of 1 users sent)", "provisioned",
		"Next: wait until they are ready")
	sameShape(t, "provision", sampleValue(t, "provision-return.json"), jsonFile(t, "provision", w.file("walk-provision-"+server+".json")),
		"geni_start_time", "geni_end_time", "geni_error")

	w.ok([]string{"-V3", "-a", "geniam", "-o", "status", "walk"}, "Status of slice urn:publicid:IDN+geniam.localhost+slice+walk at geniam", "CLIENT_ID", "worker")
	sameShape(t, "status", sampleValue(t, "status-return.json"), jsonFile(t, "status", w.file("walk-status-"+server+".json")),
		"geni_start_time", "geni_end_time", "geni_error")

	w.ok([]string{"-V3", "-a", "geniam", "-o", "describe", "walk"}, "NODE", "worker", "provisioned")
	sameShape(t, "describe", sampleValue(t, "describe-return.json"), jsonFile(t, "describe", w.file("walk-describe-"+server+".json")),
		"geni_start_time", "geni_end_time", "geni_error")

	w.ok([]string{"-V3", "-a", "geniam", "-o", "renew", "walk", "1h"}, "Renewed slivers")
	sameShape(t, "renew", sampleValue(t, "renew-return.json"), jsonFile(t, "renew", w.file("walk-renewal-"+server+".json")),
		"geni_start_time", "geni_end_time", "geni_error")
	w.fails(1, []string{"-V3", "-a", "geniam", "renew", "walk", "2030-01-01T00:00:00Z"}, "the slice expires at", "renewslice walk")

	w.ok([]string{"-V3", "-a", "geniam", "-o", "poa", "walk", "geni_start"}, "geni_start on slice")
	sameShape(t, "poa", sampleValue(t, "poa-return.json"), jsonFile(t, "poa", w.file("walk-poa-geni_start-"+server+".txt")),
		"geni_start_time", "geni_end_time", "geni_error")

	// This aggregate runs without node agents: geni_start makes the sliver
	// ready at once, and its manifest offers neither login nor data.
	r = w.ok([]string{"-a", "geniam", "wait", "walk", "--interval", "100ms", "--wait-timeout", "10s"}, "worker", "ready", "Ready. Log in: ")
	if !strings.Contains(r.stderr, "waiting for walk at geniam: 1 ready") {
		t.Errorf("wait printed no progress line:\n%s", r.stderr)
	}
	w.fails(6, []string{"-a", "geniam", "data", "walk"}, "no geniam:sliver_data link")
	w.loginAndLogs("walk", "worker")
	w.fails(2, []string{"-a", "geniam", "ssh", "walk", "nosuch"}, `no node "nosuch" in the manifest (nodes: worker)`)

	// Errors carry the geni_code label and the aggregate's log id, for people and for scripts.
	r = w.fails(1, []string{"-a", "geniam", "allocate", "walk", request}, "ALREADYEXISTS (geni_code 17)", "geni: log id ")
	r = w.fails(1, []string{"--json", "-a", "geniam", "allocate", "walk", request})
	var errLine map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &errLine); err != nil || errLine["geni_code"] != 17.0 ||
		errLine["geni_code_label"] != "ALREADYEXISTS" || len(errLine["log_id"].(string)) != 12 || errLine["exit_code"] != 1.0 {
		t.Errorf("--json error line: %v %v", errLine, err)
	}

	r = w.ok([]string{"--json", "-a", "geniam", "status", "walk"})
	var line struct {
		Command, Aggregate, URL string
		Value                   struct {
			URN     string `json:"geni_urn"`
			Slivers []map[string]any
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &line); err != nil || line.Command != "status" || line.Aggregate != "geniam" ||
		line.Value.URN != "urn:publicid:IDN+geniam.localhost+slice+walk" {
		t.Errorf("--json status: %+v %v\n%s", line, err, r.stdout)
	}

	w.ok([]string{"-V3", "renewslice", "walk", "48h"}, "Slice urn:publicid:IDN+geniam.localhost+slice+walk now expires at")
	w.ok([]string{"-V3", "-a", "geniam", "-o", "delete", "walk"}, "Deleted slivers", "unallocated")
	sameShape(t, "delete", sampleValue(t, "delete-return.json"), jsonFile(t, "delete", w.file("walk-delete-"+server+".json")),
		"geni_start_time", "geni_end_time", "geni_operational_status", "geni_error")
	w.ok([]string{"-a", "geniam", "status", "walk"}, "(no slivers)")
	w.fails(1, []string{"-a", "geniam", "-u", "urn:publicid:IDN+geniam.localhost+sliver+00000000", "status", "walk"}, "SEARCHFAILED (geni_code 12)", "geni: log id ")

	w.ok([]string{"listaggregates"}, "NICKNAME", "geniam", devenv.AMURN, w.s.amURL)
	// Shutdown on a second slice; without -a the clearinghouse's aggregates are used, as omni does.
	w.ok([]string{"createslice", "halt"})
	w.ok([]string{"allocate", "halt", request}, "Allocated 1 slivers")
	w.ok([]string{"shutdown", "halt"}, "Shut down slice urn:publicid:IDN+geniam.localhost+slice+halt")
	w.fails(1, []string{"status", "halt"}, "FORBIDDEN (geni_code 3)")

	// Usage and configuration errors.
	w.fails(2, []string{"-V2", "getversion"}, "geni speaks AM API v3")
	w.fails(2, []string{"-a", "nosuch", "getversion"}, `unknown aggregate "nosuch"`)
	w.fails(2, []string{"frobnicate"}, `unknown command "frobnicate"`)
}

// TestGeniWalkthroughWithContainers is the walkthrough with real containers:
// make run's node agent code and demo image on the real Docker engine, so
// that geni wait sees the slivers ready and geni data downloads their /data.
func TestGeniWalkthroughWithContainers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // stops the agent last, after the aggregate
	imagetest.NeedDocker(t, provision.DockerAvailable(ctx))
	dir := t.TempDir()
	pki := newDevPKI(t)
	// One agent, for node1, on an address of its own (make run's are
	// 127.0.0.2-4); the other demo nodes are drained.
	const agentIP = "127.0.18.2"
	saved := devAgentNodes
	devAgentNodes = []struct{ name, ip string }{{"node1", agentIP}}
	agentCfg := &config.Config{}
	if err := os.MkdirAll(filepath.Join(dir, "dev"), 0o755); err != nil { // where make run keeps its demo request
		t.Fatal(err)
	}
	useNodeAgent(t)
	demo := startDevAgents(ctx, dir, pki, agentCfg, slog.New(slog.DiscardHandler))
	devAgentNodes = saved
	if demo == nil {
		t.Fatal("make run's agents or demo image did not start")
	}
	s := serveWith(t, pki, pgtest.NewDatabase(t), &serveHooks{allowLocalImages: true, afterMigrate: func(ctx context.Context, st *store.Store) error {
		if err := seedDemo(ctx, st); err != nil {
			return err
		}
		_, err := st.Pool().Exec(ctx, `UPDATE nodes SET agent_url = 'https://`+agentIP+`:1887' WHERE name = 'node1';
			UPDATE nodes SET drained = true WHERE name <> 'node1'`)
		return err
	}}, func(c *config.Config) {
		c.Listen = freeAddr(t) // the data links carry the public URL
		c.Agents = agentCfg.Agents
		c.VarDir = dir
	})
	w := geniWalkOn(t, s)
	t.Cleanup(func() { // no container stays behind, even when the test fails
		w.run("-a", "geniam", "delete", "demo")
		deadline := time.Now().Add(90 * time.Second)
		for n := 1; n > 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM jobs WHERE state IN ('queued','running')").Scan(&n); err != nil {
				t.Error(err)
				return
			}
		}
	})

	w.ok([]string{"createslice", "demo"}, "Created slice with Name demo")
	w.ok([]string{"-a", "geniam", "allocate", "demo", demo.request}, "Allocated 2 slivers", "server", "once")
	w.ok([]string{"-a", "geniam", "provision", "demo"}, "Provisioned 2 slivers")
	start := time.Now()
	r := w.ok([]string{"-a", "geniam", "wait", "demo", "--interval", "250ms", "--wait-timeout", "3m"},
		"running", "Ready. Log in: ")
	t.Logf("provision to ready: %s\n%s", time.Since(start).Round(100*time.Millisecond), r.stderr)

	w.ok([]string{"-a", "geniam", "describe", "demo"}, "/data/")
	r = w.ok([]string{"-a", "geniam", "data", "demo"}, "data of server: ", "data of once: ", "(live node1)")
	for _, node := range []string{"server", "once"} {
		tar, err := os.ReadFile(filepath.Join(w.dir, "demo-"+node+"-data.tar"))
		if err != nil {
			t.Fatal(err)
		}
		names := tarNames(t, bytes.NewReader(tar))
		if !strings.Contains(strings.Join(names, " "), "hello.txt") {
			t.Errorf("%s's /data tar holds %v, want the demo's hello.txt", node, names)
		}
	}
	w.loginAndLogs("demo", "server")
	w.ok([]string{"-a", "geniam", "delete", "demo"}, "Deleted slivers")
	w.fails(6, []string{"-a", "geniam", "data", "demo"}, "has no slivers at geniam (deleted or expired?)")
}

// tarNames lists the regular files of a tar, in order.
func tarNames(t *testing.T, r io.Reader) []string {
	t.Helper()
	return slices.Sorted(maps.Keys(amtest.TarFiles(t, r)))
}

// loginAndLogs checks geni ssh and geni logs on a node: geni follows the
// manifest's <login> and sliver_log link when the aggregate gives them, and
// says so when it does not (exit 6). The ssh on PATH is a stand-in that
// prints what geni ran it with.
func (w *geniWalk) loginAndLogs(slice, node string) {
	t := w.t
	t.Helper()
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "ssh"), []byte("#!/bin/sh\necho \"ssh $*\"\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	w.path = fake
	defer func() { w.path = "" }()
	switch r := w.run("-a", "geniam", "ssh", slice, node, "--", "true"); r.code {
	case 6:
		if !strings.Contains(r.stderr, "node "+node+" at geniam has no SSH login in its manifest") {
			t.Errorf("ssh without a login: %s", r.stderr)
		}
	case 7:
		if !regexp.MustCompile(`ssh (-p \d+ )?(-i \S+ )?\S+@\S+ -- true`).MatchString(r.stdout) {
			t.Errorf("ssh ran as %q", r.stdout)
		}
	default:
		t.Errorf("geni ssh: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	switch r := w.run("-a", "geniam", "logs", slice, node); r.code {
	case 6:
		if !strings.Contains(r.stderr, "no geniam:sliver_log link") {
			t.Errorf("logs without a link: %s", r.stderr)
		}
	case 0:
		if !strings.Contains(r.stdout, "==> "+node) {
			t.Errorf("logs: %s", r.stdout)
		}
	default:
		t.Errorf("geni logs: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
