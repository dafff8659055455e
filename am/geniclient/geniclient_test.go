package geniclient

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// omniSample is the path of a file omni wrote, kept in testdata/omni-samples.
func omniSample(name string) string { return filepath.Join("testdata", "omni-samples", name) }

func readOmniSample(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(omniSample(name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The omni_config of the omni lab (gcf-ch, gcf-am), with comments and a
// continuation line as Python's ConfigParser reads them.
const labConfig = `# omni lab
[omni]
default_cf = my_gcf
users = alice, bob

[alice]
urn = urn:publicid:IDN+geni:gpo:gcf+user+alice
keys = /lab/certs/alice-ssh.pub,
  /lab/certs/alice2.pub

[bob]
urn: urn:publicid:IDN+geni:gpo:gcf+user+bob
keys = ~/.ssh/bob.pub

[my_gcf]
type = gcf
authority = geni:gpo:gcf
ch = https://127.0.0.1:8000
cert = /lab/certs/alice-cert.pem
key = /lab/certs/alice-key.pem

[portal]
type = chapi
ch = https://ch.geni.net:8444/CH

; nicknames
[aggregate_nicknames]
gcfam = urn:publicid:IDN+geni:gpo:gcf:am1+authority+am,https://127.0.0.1:8001
urlonly = https://am.example.org:12346
`

func TestOmniConfig(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "omni_config", labConfig)
	c, err := LoadOmniConfig(path, "")
	if err != nil {
		t.Fatal(err)
	}
	fw := c.Framework
	if fw.Name != "my_gcf" || fw.Type != "gcf" || fw.CH != "https://127.0.0.1:8000" || fw.Authority != "geni:gpo:gcf" ||
		fw.Cert != "/lab/certs/alice-cert.pem" || fw.Key != "/lab/certs/alice-key.pem" {
		t.Errorf("framework %+v", fw)
	}
	if err := c.CheckFramework(); err != nil {
		t.Error(err)
	}
	home, _ := os.UserHomeDir()
	if len(c.Users) != 2 || c.Users[0].URN != "urn:publicid:IDN+geni:gpo:gcf+user+alice" ||
		strings.Join(c.Users[0].KeyFiles, " ") != "/lab/certs/alice-ssh.pub /lab/certs/alice2.pub" ||
		c.Users[1].URN != "urn:publicid:IDN+geni:gpo:gcf+user+bob" || c.Users[1].KeyFiles[0] != filepath.Join(home, ".ssh/bob.pub") {
		t.Errorf("users %+v", c.Users)
	}
	for arg, want := range map[string]Aggregate{
		"gcfam":                  {Nick: "gcfam", URN: "urn:publicid:IDN+geni:gpo:gcf:am1+authority+am", URL: "https://127.0.0.1:8001"},
		"https://127.0.0.1:8001": {Nick: "gcfam", URN: "urn:publicid:IDN+geni:gpo:gcf:am1+authority+am", URL: "https://127.0.0.1:8001"},
		"https://127.0.0.1:9/":   {URL: "https://127.0.0.1:9/"},
		"urlonly":                {Nick: "urlonly", URL: "https://am.example.org:12346"},
		"urn:publicid:IDN+geni:gpo:gcf:am1+authority+am": {Nick: "gcfam", URN: "urn:publicid:IDN+geni:gpo:gcf:am1+authority+am", URL: "https://127.0.0.1:8001"},
	} {
		got, err := c.Aggregate(arg)
		if err != nil || got != want {
			t.Errorf("Aggregate(%q) = %+v, %v; want %+v", arg, got, err, want)
		}
	}
	if _, err := c.Aggregate("nosuch"); err == nil || !strings.Contains(err.Error(), `unknown aggregate "nosuch"`) {
		t.Errorf("unknown nickname: %v", err)
	}
	if urn, err := c.SliceURN("labslice"); err != nil || urn != "urn:publicid:IDN+geni:gpo:gcf+slice+labslice" {
		t.Errorf("SliceURN: %s %v", urn, err)
	}
	if _, err := c.SliceURN("urn:publicid:IDN+geni:gpo:gcf+user+alice"); err == nil {
		t.Error("a user URN was taken as a slice")
	}
	// Another framework of the file: named, and refused by name.
	p, err := LoadOmniConfig(path, "portal")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckFramework(); err == nil || !strings.Contains(err.Error(), `type "chapi"`) {
		t.Errorf("chapi framework: %v", err)
	}
	for name, body := range map[string]string{
		"no [omni]":        "[x]\na = b\n",
		"no default_cf":    "[omni]\nusers =\n",
		"missing section":  "[omni]\ndefault_cf = nope\n",
		"missing user":     "[omni]\ndefault_cf = f\nusers = carol\n[f]\ntype = gcf\n",
		"line before [..]": "a = b\n",
		"bad line":         "[omni]\njust words\n",
	} {
		if _, err := LoadOmniConfig(writeFile(t, dir, "bad", body), ""); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLocateOmniConfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if _, err := LocateOmniConfig(""); err == nil {
		t.Error("found a config where there is none")
	}
	os.MkdirAll(filepath.Join(home, ".gcf"), 0o755)
	p := writeFile(t, filepath.Join(home, ".gcf"), "omni_config", labConfig)
	if got, err := LocateOmniConfig(""); err != nil || got != p {
		t.Errorf("default: %s %v", got, err)
	}
	writeFile(t, filepath.Join(home, ".gcf"), "other", labConfig)
	if got, err := LocateOmniConfig("other"); err != nil || got != filepath.Join(home, ".gcf", "other") {
		t.Errorf("-c name under ~/.gcf: %s %v", got, err)
	}
}

// omni's _get_server_name and _construct_output_filename.
func TestFileNames(t *testing.T) {
	for _, c := range []struct{ url, urn, want string }{
		{"https://127.0.0.1:8001", "urn:publicid:IDN+geni:gpo:gcf:am1+authority+am", "geni-gpo-gcf-am1"},
		{"https://127.0.0.1:18501/", "urn:publicid:IDN+geniam.localhost+authority+am", "geniam-localhost"},
		{"https://boss.emulab.net:12369/protogeni/xmlrpc/am/3.0", "", "emulab-net-protogeniv3"},
		{"https://am.example.org:12346", "", "am-example-org"},
		{"https://127.0.0.1:8001/", "", "127-0-0-1-8001"},
	} {
		if got := ServerName(c.url, c.urn); got != c.want {
			t.Errorf("ServerName(%q, %q) = %q, want %q", c.url, c.urn, got, c.want)
		}
	}
	a := Aggregate{URL: "https://127.0.0.1:8001", URN: "urn:publicid:IDN+geni:gpo:gcf:am1+authority+am"}
	for _, c := range []struct {
		o                        OutputNames
		slice, method, ext, want string
		count                    int
	}{
		{OutputNames{}, "", "getversion", ".json", "getversion-geni-gpo-gcf-am1.json", 1},
		{OutputNames{}, "", "rspec", ".xml", "rspec-geni-gpo-gcf-am1.xml", 1},
		{OutputNames{}, "labslice", "allocate", ".json", "labslice-allocate-geni-gpo-gcf-am1.json", 1},
		{OutputNames{Prefix: "mine"}, "labslice", "status", ".json", "mine-labslice-status-geni-gpo-gcf-am1.json", 1},
		{OutputNames{Prefix: "out/"}, "labslice", "status", ".json", "out/labslice-status-geni-gpo-gcf-am1.json", 1},
		{OutputNames{OutputFile: "%s-manifest-%a.json"}, "labslice", "allocate", ".json", "labslice-manifest-geni-gpo-gcf-am1.json", 2},
		{OutputNames{OutputFile: "x.json"}, "labslice", "allocate", ".json", "geni-gpo-gcf-am1-x.json", 2},
	} {
		if got := c.o.FileName(c.slice, a, c.method, c.ext, c.count); got != c.want {
			t.Errorf("%+v FileName(%s, %s) = %q, want %q", c.o, c.slice, c.method, got, c.want)
		}
	}
	if got := (OutputNames{}).UserCredName("alice", "my_gcf"); got != "alice-my_gcf-usercred" {
		t.Errorf("UserCredName %q", got)
	}
	if got := (OutputNames{Prefix: "p"}).SliceCredName("labslice"); got != "p-labslice-cred" {
		t.Errorf("SliceCredName %q", got)
	}
}

// A credential read from omni's -o file is written back byte for byte.
func TestCredentialFilesAsOmniWritesThem(t *testing.T) {
	for _, name := range []string{"usercred-omni-o-output.json", "slicecred-omni-o-output.json"} {
		want := readOmniSample(t, name)
		c, err := ReadCredentialFile(omniSample(name))
		if err != nil {
			t.Fatal(err)
		}
		if c.Type != "geni_sfa" || c.Version != "3" || !strings.HasPrefix(c.Value, "<?xml") {
			t.Errorf("%s: %s %s %.40q", name, c.Type, c.Version, c.Value)
		}
		if got := c.MarshalOmni(); !bytes.Equal(got, want) {
			t.Errorf("%s: written differently from omni:\n%.300q\n%.300q", name, got, want)
		}
		out, err := SaveCredential(filepath.Join(t.TempDir(), "sub", "x-cred"), c)
		if err != nil || !strings.HasSuffix(out, "x-cred.json") {
			t.Fatalf("SaveCredential: %s %v", out, err)
		}
		back, err := ReadCredentialFile(out)
		if err != nil || back != c {
			t.Errorf("round trip: %v", err)
		}
	}
	c, _ := ReadCredentialFile(omniSample("slicecred-omni-o-output.json"))
	if c.Target() != "urn:publicid:IDN+geni:gpo:gcf+slice+labslice" || c.Owner() != "urn:publicid:IDN+geni:gpo:gcf+user+alice" {
		t.Errorf("target %q owner %q", c.Target(), c.Owner())
	}
	if got := c.Expires(); got.Year() != 2026 || got.Location() != time.UTC {
		t.Errorf("expires %v", got)
	}
	// Raw XML is wrapped as omni wraps it; an ABAC credential is geni_abac.
	if w := WrapCredential("<signed-credential><credential><type>abac</type></credential></signed-credential>"); w.Type != "geni_abac" || w.Version != "1" {
		t.Errorf("abac: %+v", w)
	}
	for _, bad := range []string{"hello", "{\"geni_value\": 3}", "{\"geni_value\": \"no xml\"}", "{"} {
		if _, err := ParseCredential([]byte(bad)); err == nil {
			t.Errorf("%q accepted as a credential", bad)
		}
	}
}

func TestDecompress(t *testing.T) {
	doc := `<rspec type="advertisement"/>`
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write([]byte(doc))
	zw.Close()
	enc := base64.StdEncoding.EncodeToString(z.Bytes())
	for _, in := range []string{doc, enc, enc[:10] + "\n" + enc[10:]} {
		if got, err := Decompress(in); err != nil || got != doc {
			t.Errorf("Decompress(%.20q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"!!!", base64.StdEncoding.EncodeToString([]byte("not zlib"))} {
		if _, err := Decompress(bad); err == nil {
			t.Errorf("%q decompressed", bad)
		}
	}
}

const manifest = `<?xml version="1.0"?>
<rspec xmlns="http://www.geni.net/resources/rspec/3" xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="manifest">
  <node client_id="server" component_id="urn:publicid:IDN+x+node+node1" sliver_id="urn:publicid:IDN+x+sliver+a1">
    <sliver_type name="container"/>
    <services><login authentication="ssh-keys" hostname="127.0.0.2" port="2222" username="alice"/></services>
    <geniam:sliver_state allocation="geni_provisioned" exit_code="3" error="boom"/>
    <geniam:sliver_log url="https://am/logs/a1.txt"/>
    <geniam:sliver_data url="https://am/data/a1.tar"/>
  </node>
  <node client_id="once"><node client_id="nested-is-not-a-node"/></node>
</rspec>`

func TestParseManifest(t *testing.T) {
	nodes, err := ParseManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 {
		t.Fatalf("%d nodes: %+v", len(nodes), nodes)
	}
	n := nodes[0]
	if n.ClientID != "server" || n.SliverID != "urn:publicid:IDN+x+sliver+a1" || len(n.Logins) != 1 ||
		n.Logins[0] != (Login{"ssh-keys", "127.0.0.2", "2222", "alice"}) || n.DataURL != "https://am/data/a1.tar" ||
		n.LogURL != "https://am/logs/a1.txt" || n.ExitCode != "3" || n.StateError != "boom" {
		t.Errorf("node %+v", n)
	}
	if nodes[1].ClientID != "once" || len(nodes[1].Logins) != 0 {
		t.Errorf("node %+v", nodes[1])
	}
	if _, err := PickNode(nodes, ""); err == nil || !strings.Contains(err.Error(), "2 nodes (server, once): name one") {
		t.Errorf("PickNode of two: %v", err)
	}
	if got, err := PickNode(nodes, "once"); err != nil || got.ClientID != "once" {
		t.Errorf("PickNode once: %v", err)
	}
	if _, err := ParseManifest("<rspec><node"); err == nil {
		t.Error("a cut manifest was read")
	}
	adNodes, err := ParseAdvertisement(string(readOmniSample(t, "advertisement-omni-o-output.xml")))
	if err != nil || len(adNodes) == 0 || adNodes[0].SliverTypes[0] != "fake-vm" || adNodes[0].Available == "" {
		t.Errorf("gcf advertisement: %v %+v", err, adNodes)
	}
}

func TestDownload(t *testing.T) {
	cred := Credential{"geni_sfa", "3", "<signed-credential/>"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := new(bytes.Buffer)
		body.ReadFrom(r.Body)
		switch r.URL.Path {
		case "/ok.tar":
			if r.Method != http.MethodPost || !bytes.Equal(body.Bytes(), cred.MarshalOmni()) {
				http.Error(w, "bad request", 400)
				return
			}
			w.Header().Set("X-Geniam-Data-Source", "live node1")
			w.Write([]byte("tar bytes"))
		case "/refused.tar":
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error": "no (log id 0123456789ab)", "code": "FORBIDDEN", "geni_code": 3}`))
		case "/cut.tar":
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("only some"))
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	n, source, err := Download(context.Background(), srv.Client(), srv.URL+"/ok.tar", cred, filepath.Join(dir, "a", "ok.tar"))
	if b, _ := os.ReadFile(filepath.Join(dir, "a", "ok.tar")); err != nil || n != 9 || source != "live node1" || string(b) != "tar bytes" {
		t.Errorf("ok: %d %q %v %q", n, source, err, b)
	}
	_, _, err = Download(context.Background(), srv.Client(), srv.URL+"/refused.tar", cred, filepath.Join(dir, "r.tar"))
	de, ok := err.(*DownloadError)
	if !ok || de.Code != 3 || de.LogID() != "0123456789ab" || !strings.Contains(de.Error(), "FORBIDDEN") {
		t.Errorf("refused: %v", err)
	}
	if _, _, err = Download(context.Background(), srv.Client(), srv.URL+"/cut.tar", cred, filepath.Join(dir, "c.tar")); err == nil {
		t.Error("a cut download succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files left besides a/: %v", entries)
	}
}

// A manifest is the aggregate's: what a client hands to ssh, where it sends
// the credential and how it names files must not be steered by it.
func TestHostileManifest(t *testing.T) {
	for _, l := range []Login{
		{Hostname: "-oProxyCommand=touch /tmp/pwned"},
		{Hostname: "host", Username: "-oProxyCommand=x"},
		{Hostname: "host", Port: "22 -oX"},
		{Hostname: "host", Port: "0"},
		{Hostname: ""},
		{Hostname: "a b"},
	} {
		if err := l.Check(); err == nil {
			t.Errorf("login %+v accepted", l)
		}
	}
	for _, l := range []Login{{Hostname: "127.0.0.2", Port: "2222", Username: "alice"}, {Hostname: "node1.example.org"}, {Hostname: "[::1]", Port: "22"}} {
		if err := l.Check(); err != nil {
			t.Errorf("login %+v refused: %v", l, err)
		}
	}
	am := "https://am.example.org:12346/"
	for link, ok := range map[string]bool{
		"https://am.example.org:12346/data/x.tar": true,
		"https://AM.example.org/data/x.tar":       true,
		"http://am.example.org:12346/data/x.tar":  false,
		"https://evil.example.org/data/x.tar":     false,
		"https://am.example.org.evil.org/x":       false,
		"::not a url":                             false,
	} {
		if err := SameSite(link, am); (err == nil) != ok {
			t.Errorf("SameSite(%q) = %v, want ok %v", link, err, ok)
		}
	}
	for in, want := range map[string]string{"server": "server", "../../.bashrc": "-..-.bashrc", ".hidden": "hidden", "a/b": "a-b", "": "node", "...": "node"} {
		if got := FileNamePart(in); got != want {
			t.Errorf("FileNamePart(%q) = %q, want %q", in, got, want)
		}
	}
}
