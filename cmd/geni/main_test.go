package main

import (
	"bytes"
	"compress/zlib"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/am/xmlrpc"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
)

// TestMain lets the tests run this test binary as the geni command (ssh
// replaces the process, so geni must run as a process of its own).
func TestMain(m *testing.M) {
	if os.Getenv("GENI_TEST_AS_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

func samplesDir() string {
	return filepath.Join("..", "..", "am", "geniclient", "testdata", "omni-samples")
}

// sample reads one of omni-samples' raw AM answers as XML-RPC values:
// integers stay integers (geni_code is an int on the wire).
func sample(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samplesDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return ints(v).(map[string]any)
}

func ints(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = ints(e)
		}
	case []any:
		for i, e := range x {
			x[i] = ints(e)
		}
	}
	return v
}

// gcfAM answers as the gcf reference AM did in the omni lab (its saved
// answers: times as strings, geni_api beside code, XML-RPC faults for
// refusals), and records the options of each call.
type gcfAM struct {
	t        *testing.T
	mu       sync.Mutex
	options  map[string][]string // method → option names sent
	status   []string            // operational states Status returns, in turn
	manifest string              // Describe's geni_rspec ("" = the sample's)
	busy     int                 // answer this many Status calls with BUSY first
	calls    int
}

func (f *gcfAM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call, err := xmlrpc.DecodeCall(r.Body, xmlrpc.Limits{})
	if err != nil {
		_ = xmlrpc.EncodeFault(w, 1, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if n := len(call.Params); n > 0 {
		if o, ok := call.Params[n-1].(map[string]any); ok {
			var names []string
			for k := range o {
				names = append(names, k)
			}
			sort.Strings(names)
			f.options[call.Method] = names
		}
	}
	var ans map[string]any
	switch call.Method {
	case "GetVersion":
		ans = sample(f.t, "getversion.json")
	case "ListResources":
		ad, _ := os.ReadFile(filepath.Join(samplesDir(), "advertisement-omni-o-output.xml"))
		var z bytes.Buffer
		zw := zlib.NewWriter(&z)
		zw.Write(ad)
		zw.Close()
		ans = map[string]any{"code": map[string]any{"geni_code": int64(0), "am_type": "gcf"}, "output": "",
			"value": base64.StdEncoding.EncodeToString(z.Bytes())}
	case "Allocate":
		ans = sample(f.t, "allocate-return.json")
	case "Provision":
		ans = sample(f.t, "provision-return.json")
	case "Describe":
		ans = sample(f.t, "describe-return.json")
		if f.manifest != "" {
			ans["value"].(map[string]any)["geni_rspec"] = f.manifest
		}
	case "Status":
		if f.busy > 0 {
			f.busy--
			_ = xmlrpc.EncodeResponse(w, map[string]any{"code": map[string]any{"geni_code": int64(14)}, "output": "busy, try again", "value": 0})
			return
		}
		ans = sample(f.t, "status-return.json")
		if len(f.status) > 0 {
			sliver := ans["value"].(map[string]any)["geni_slivers"].([]any)[0].(map[string]any)
			sliver["geni_operational_status"] = f.status[0]
			if f.status[0] == "geni_pending_allocation" {
				sliver["geni_allocation_status"] = "geni_allocated"
			}
			if f.status[0] == "geni_failed" {
				sliver["geni_error"] = "the image would not start"
			}
			if len(f.status) > 1 {
				f.status = f.status[1:]
			}
		}
	case "Renew":
		ans = sample(f.t, "renew-return.json")
	case "PerformOperationalAction":
		if call.Params[2] == "" {
			// gcf-am re-raises its error as a fault (omni-lab.md, section 7).
			_ = xmlrpc.EncodeFault(w, 1, "Unsupported: Operational action '' not supported")
			return
		}
		ans = sample(f.t, "poa-return.json")
	case "Delete":
		ans = sample(f.t, "delete-return.json")
	default:
		_ = xmlrpc.EncodeFault(w, 1, "no such method "+call.Method)
		return
	}
	_ = xmlrpc.EncodeResponse(w, ans)
}

// gcfCH answers CreateUserCredential and CreateSlice with the credentials
// gcf-ch issued in the omni lab.
type gcfCH struct{ t *testing.T }

func (c *gcfCH) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call, err := xmlrpc.DecodeCall(r.Body, xmlrpc.Limits{})
	if err != nil {
		_ = xmlrpc.EncodeFault(w, 1, err.Error())
		return
	}
	file := map[string]string{"CreateUserCredential": "usercred-omni-o-output.json", "CreateSlice": "slicecred-omni-o-output.json"}[call.Method]
	if file == "" {
		_ = xmlrpc.EncodeFault(w, 13, "unknown method "+call.Method)
		return
	}
	if call.Method == "CreateSlice" && call.Params[0] != "urn:publicid:IDN+geni:gpo:gcf+slice+labslice" {
		_ = xmlrpc.EncodeFault(w, 3, fmt.Sprintf("no slice %v here", call.Params[0]))
		return
	}
	b, _ := os.ReadFile(filepath.Join(samplesDir(), file))
	var cred struct {
		Value string `json:"geni_value"`
	}
	_ = json.Unmarshal(b, &cred)
	_ = xmlrpc.EncodeResponse(w, cred.Value) // gcf-ch returns the XML itself
}

// gcfLab is a gcf-like clearinghouse and AM over TLS with client
// certificates, and an omni_config for them like the omni lab's.
type gcfLab struct {
	t      *testing.T
	dir    string
	am     *gcfAM
	amURL  string
	config string
}

func tlsServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func newGcfLab(t *testing.T) *gcfLab {
	dir := t.TempDir()
	ca := pkitest.NewIn(t, dir, devpki.Options{URN: "urn:publicid:IDN+geni:gpo:gcf+authority+sa", CommonName: "gcf CA"})
	certFile, keyFile := ca.Files(ca.Issue(devpki.Options{URN: "urn:publicid:IDN+geni:gpo:gcf+user+alice", Email: "alice@example.org"}), "alice")
	for name, body := range map[string]string{"alice-ssh.pub": "ssh-ed25519 AAAAalice alice@lab\n", "alice-ssh": "private\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := &gcfLab{t: t, dir: dir, am: &gcfAM{t: t, options: map[string][]string{}}}
	l.amURL = tlsServer(t, l.am).URL
	chURL := tlsServer(t, &gcfCH{t: t}).URL
	l.config = filepath.Join(dir, "omni_config")
	body := fmt.Sprintf(`[omni]
default_cf = my_gcf
users = alice

[alice]
urn = urn:publicid:IDN+geni:gpo:gcf+user+alice
keys = %[1]s/alice-ssh.pub

[my_gcf]
type = gcf
authority = geni:gpo:gcf
ch = %[2]s
cert = %[3]s
key = %[4]s

[aggregate_nicknames]
gcfam = urn:publicid:IDN+geni:gpo:gcf:am1+authority+am,%[5]s
`, dir, chURL, certFile, keyFile, l.amURL)
	if err := os.WriteFile(l.config, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

type result struct {
	stdout, stderr string
	code           int
}

// geni runs this test binary as geni in the lab's directory; extraPath is
// put first on PATH (a fake ssh).
func (l *gcfLab) geni(extraPath string, args ...string) result {
	l.t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-c", l.config}, args...)...)
	cmd.Dir = l.dir
	cmd.Env = append(os.Environ(), "GENI_TEST_AS_MAIN=1", "HOME="+l.dir)
	if extraPath != "" {
		cmd.Env = append(cmd.Env, "PATH="+extraPath+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	var r result
	r.stdout, r.stderr, r.code = amtest.Run(l.t, cmd)
	return r
}

func (l *gcfLab) want(r result, code int, stdout ...string) {
	l.t.Helper()
	if r.code != code {
		l.t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdout {
		if !strings.Contains(r.stdout+r.stderr, s) {
			l.t.Errorf("output lacks %q:\nstdout:\n%s\nstderr:\n%s", s, r.stdout, r.stderr)
		}
	}
}

// standardOptions are the AM API v3 options; geni sends no others, so it
// works with any aggregate.
var standardOptions = map[string]bool{"geni_rspec_version": true, "geni_compressed": true, "geni_available": true,
	"geni_users": true, "geni_best_effort": true, "geni_end_time": true, "geni_extend_alap": true, "geni_speaking_for": true}

// TestAgainstGcfReferenceAM runs omni's cycle (omni-lab.md section 6)
// against answers the gcf reference AM and clearinghouse gave.
func TestAgainstGcfReferenceAM(t *testing.T) {
	l := newGcfLab(t)
	l.want(l.geni("", "-V3", "-a", "gcfam", "getversion"), 0, "AM gcfam ("+l.amURL+") has version:", "geni_am_type", "gcf", "GENI 3")
	l.want(l.geni("", "-V3", "-a", "gcfam", "-o", "listresources"), 0, "gcfam advertises", "fake-vm")
	if _, err := os.Stat(filepath.Join(l.dir, "rspec-geni-gpo-gcf-am1.xml")); err != nil {
		t.Error(err)
	}
	l.want(l.geni("", "-V3", "-o", "getusercred"), 0, "alice-my_gcf-usercred.json")
	l.want(l.geni("", "-V3", "-o", "getslicecred", "labslice"), 0, "labslice-cred.json")
	req := filepath.Join(l.dir, "request.xml")
	os.WriteFile(req, []byte(`<rspec type="request" xmlns="http://www.geni.net/resources/rspec/3"><node client_id="node1"/></rspec>`), 0o644)
	l.want(l.geni("", "-V3", "-a", "gcfam", "-o", "allocate", "labslice", req), 0, "Allocated 1 slivers", "pending_allocation",
		"2026-11-21T20:53:01.868415+00:00")
	r := l.geni("", "-V3", "-a", "gcfam", "provision", "labslice")
	l.want(r, 0, "Provisioned 1 slivers", "(SSH keys of 1 users sent)")
	l.want(l.geni("", "-V3", "-a", "gcfam", "status", "labslice"), 0, "notready", "Next: geni -c "+l.config+" -a gcfam wait labslice")
	l.want(l.geni("", "-V3", "-a", "gcfam", "describe", "labslice"), 0, "node1", "urn:publicid:IDN+geni:gpo:gcf+fakevm+")
	l.want(l.geni("", "-V3", "-a", "gcfam", "--alap", "renew", "labslice", "40m"), 0, "Renewed slivers")
	l.want(l.geni("", "-V3", "-a", "gcfam", "performoperationalaction", "labslice", "geni_start"), 0, "geni_start on slice")
	l.want(l.geni("", "-V3", "-a", "gcfam", "poa", "labslice", ""), 1, "XML-RPC fault 1: Unsupported")
	l.want(l.geni("", "-V3", "-a", "gcfam", "delete", "labslice"), 0, "Deleted slivers")
	l.want(l.geni("", "-V3", "-a", "gcfam", "status", "otherslice"), 1, "XML-RPC fault 3", "no slice urn:publicid:IDN+geni:gpo:gcf+slice+otherslice here")
	for method, names := range l.am.options {
		for _, n := range names {
			if !standardOptions[n] {
				t.Errorf("%s sent option %s, which is not AM API v3", method, n)
			}
		}
	}
	if got := strings.Join(l.am.options["ListResources"], ","); got != "geni_compressed,geni_rspec_version" {
		t.Errorf("ListResources options %s", got)
	}
	if got := strings.Join(l.am.options["Renew"], ","); got != "geni_extend_alap" {
		t.Errorf("Renew options %s", got)
	}
	// Speaks-for: the option and the speaks-for credential.
	sf := filepath.Join(l.dir, "speaksfor.xml")
	os.WriteFile(sf, []byte("<signed-credential><credential><type>abac</type></credential></signed-credential>"), 0o644)
	l.want(l.geni("", "-a", "gcfam", "--speaksfor", "urn:publicid:IDN+geni:gpo:gcf+user+bob", "getversion"), 2, "--speaksfor needs the speaks-for credential")
	l.want(l.geni("", "-a", "gcfam", "--speaksfor", "urn:publicid:IDN+geni:gpo:gcf+user+bob", "--cred", sf, "status", "labslice"), 0)
	if got := strings.Join(l.am.options["Status"], ","); got != "geni_speaking_for" {
		t.Errorf("Status options with --speaksfor: %s", got)
	}
}

func TestWaitEndings(t *testing.T) {
	l := newGcfLab(t)
	l.am.status = []string{"geni_notready", "geni_configuring", "geni_ready"}
	r := l.geni("", "-a", "gcfam", "wait", "labslice", "--interval", "10ms")
	l.want(r, 0, "Ready. Log in: ")
	for _, s := range []string{"1 notready", "1 configuring", "1 ready"} {
		if !strings.Contains(r.stderr, "waiting for labslice at gcfam: "+s) {
			t.Errorf("no progress line with %q:\n%s", s, r.stderr)
		}
	}
	l.am.status, l.am.busy = []string{"geni_ready"}, 2
	r = l.geni("", "-a", "gcfam", "wait", "labslice", "--interval", "10ms")
	l.want(r, 0, "BUSY (geni_code 14): busy, try again; trying again", "1 ready")
	l.am.status = []string{"geni_pending_allocation"}
	l.want(l.geni("", "-a", "gcfam", "wait", "labslice", "--interval", "10ms"), exitRefused, "1 slivers are only allocated", "provision labslice")
	l.am.status = []string{"geni_configuring", "geni_failed"}
	l.want(l.geni("", "-a", "gcfam", "wait", "labslice", "--interval", "10ms"), exitFailed, "1 of 1 slivers failed", "the image would not start")
	l.am.status = []string{"geni_configuring"}
	l.want(l.geni("", "-a", "gcfam", "wait", "labslice", "--interval", "10ms", "--wait-timeout", "50ms"), exitTimeout, "not ready after")
	l.am.status = []string{"geni_failed"}
	r = l.geni("", "--json", "-a", "gcfam", "wait", "labslice")
	var lines []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("--json line %q: %v", s, err)
		}
		lines = append(lines, m)
	}
	if r.code != exitFailed || len(lines) != 2 || lines[0]["command"] != "wait" || lines[1]["exit_code"] != float64(exitFailed) {
		t.Errorf("--json wait: exit %d %v", r.code, lines)
	}
}

// A manifest with a login, a data link and a log link, as geniam's manifest
// extension documents them (schemas/geniam-rspec-ext-1.xsd).
func manifestWith(dataURL, logURL string) string {
	return `<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="manifest">
  <node client_id="server"><services><login authentication="ssh-keys" hostname="127.0.0.2" port="2222" username="alice"/></services>
    <geniam:sliver_data url="` + dataURL + `"/><geniam:sliver_log url="` + logURL + `"/></node>
  <node client_id="once"/>
</rspec>`
}

func TestSSHDataLogs(t *testing.T) {
	l := newGcfLab(t)
	var posted []string
	files := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := new(bytes.Buffer)
		b.ReadFrom(r.Body)
		posted = append(posted, r.Method+" "+r.URL.Path+" "+strings.SplitN(b.String(), ",", 2)[0])
		switch r.URL.Path {
		case "/data/a1.tar":
			w.Header().Set("X-Geniam-Data-Source", "live node1")
			w.Write([]byte("TAR"))
		case "/logs/a1.txt":
			w.Write([]byte("hello from the start command\n"))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error": "no sliver a2 here (log id 00aa00aa00aa)", "code": "SEARCHFAILED", "geni_code": 12}`))
		}
	}))
	l.am.manifest = manifestWith(files.URL+"/data/a1.tar", files.URL+"/logs/a1.txt")

	// ssh: the system ssh with the manifest's login; a fake one prints its
	// arguments and exits 7, which geni passes on.
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "ssh"), []byte("#!/bin/sh\necho \"ssh $*\"\nexit 7\n"), 0o755)
	r := l.geni(bin, "-a", "gcfam", "ssh", "labslice", "server", "--", "uname", "-a")
	l.want(r, 7, "ssh -p 2222 -i "+filepath.Join(l.dir, "alice-ssh")+" alice@127.0.0.2 -- uname -a")
	l.want(l.geni(bin, "-a", "gcfam", "ssh", "labslice"), exitUsage, "the slice has 2 nodes (server, once): name one")
	l.want(l.geni(bin, "-a", "gcfam", "ssh", "labslice", "once"), exitUnsupported, "node once at gcfam has no SSH login")

	l.want(l.geni("", "-a", "gcfam", "data", "labslice"), 0, "data of server: 3 bytes in "+filepath.Join(l.dir, "labslice-server-data.tar")+" (live node1)",
		"not offered for: once")
	if b, _ := os.ReadFile(filepath.Join(l.dir, "labslice-server-data.tar")); string(b) != "TAR" {
		t.Errorf("data file %q", b)
	}
	if len(posted) != 1 || posted[0] != `POST /data/a1.tar {"geni_type": "geni_sfa"` {
		t.Errorf("data request %q", posted)
	}
	l.want(l.geni("", "-a", "gcfam", "logs", "labslice", "server"), 0, "==> server", "hello from the start command")
	l.want(l.geni("", "-a", "gcfam", "data", "labslice", "once"), exitUnsupported, "no geniam:sliver_data link")

	l.am.manifest = manifestWith(files.URL+"/data/a2.tar", "")
	l.want(l.geni("", "-a", "gcfam", "data", "labslice", "server"), exitRefused, "SEARCHFAILED (geni_code 12)", "geni: log id 00aa00aa00aa")

	// A hostile manifest: an ssh option as host, a link to another host, a
	// client_id that climbs directories.
	l.am.manifest = strings.ReplaceAll(manifestWith(strings.Replace(files.URL, "127.0.0.1", "localhost", 1)+"/data/a1.tar", ""),
		`hostname="127.0.0.2"`, `hostname="-oProxyCommand=touch pwned"`)
	l.want(l.geni(bin, "-a", "gcfam", "ssh", "labslice", "server"), exitRefused, "is not a host name")
	l.want(l.geni("", "-a", "gcfam", "data", "labslice", "server"), exitRefused, "is not on the aggregate's host", "not sending your credential there")
	l.am.manifest = strings.ReplaceAll(manifestWith(files.URL+"/data/a1.tar", ""), `client_id="server"`, `client_id="../../evil"`)
	l.want(l.geni("", "-a", "gcfam", "data", "labslice", "../../evil"), 0, "labslice--..-evil-data.tar")
	if len(posted) != 4 {
		t.Errorf("posted %q: the credential went where it must not", posted)
	}
}

func TestUsageErrors(t *testing.T) {
	l := newGcfLab(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"getversion", "extra"}, "usage: geni [options] getversion"},
		{[]string{"-a", "gcfam", "listresources", "labslice"}, "listed by describe: geni describe labslice"},
		{[]string{"-V2", "getversion"}, "geni speaks AM API v3"},
		{[]string{"--nosuchflag", "getversion"}, "unknown flag"},
		{[]string{"-a", "gcfam", "allocate", "labslice", "/nonexistent.xml"}, "request RSpec"},
		{[]string{"-a", "gcfam", "renew", "labslice", "whenever"}, `time "whenever"`},
		{[]string{"-a", "gcfam", "status", "a+b"}, `invalid slice name "a+b"`},
		{[]string{"-a", "gcfam", "getversion", "--", "x"}, "only ssh takes a command after --"},
		{[]string{"-f", "nosuch", "getversion"}, "missing framework section [nosuch]"},
	} {
		r := l.geni("", c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("geni %v: exit %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, exitUsage, c.want)
		}
	}
	if r := l.geni("", "--help"); r.code != 0 || !strings.Contains(r.stdout, "Exit codes:") || !strings.Contains(r.stdout, "wait SLICE") {
		t.Errorf("--help: %d %s", r.code, r.stdout)
	}
	l.want(l.geni("", "-a", "https://127.0.0.1:1/", "getversion"), exitNoAnswer, "connect")
	if l.am.calls != 0 {
		t.Errorf("usage errors reached the aggregate %d times", l.am.calls)
	}
}

func TestParseTime(t *testing.T) {
	now := time.Now().UTC()
	for in, want := range map[string]time.Time{
		"2026-12-07T18:00:00Z":      time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC),
		"2026-12-07T20:00:00+02:00": time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC),
		"2026-12-07T18:00:00":       time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC),
		"2026-12-07 18:00":          time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC),
		"20261207":                  time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC),
		"2h":                        now.Add(2 * time.Hour),
		"+3d":                       now.AddDate(0, 0, 3),
	} {
		got, err := parseTime(in)
		if err != nil || got.Sub(want).Abs() > 5*time.Second {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "2d3h", "-", "2026-13-01"} {
		if _, err := parseTime(bad); err == nil {
			t.Errorf("parseTime(%q) accepted", bad)
		}
	}
}
