package geniapi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/credentials/devpki"
)

// The edge against clients that are not ours, run as processes over real
// mutual TLS: Python's xmlrpc.client (what omni is built on) and curl.

// pythonClient calls the AM over mutual TLS with Python's xmlrpc.client, the
// library omni is built on, and applies the type checks of the acceptance
// test (am_api_accept.py) to GetVersion, then omni's geni_compressed handling.
const pythonClient = `
import sys, ssl, zlib, base64
import xmlrpc.client as x

url, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
am = x.ServerProxy(url, context=ctx)
fail = []
def check(cond, what):
    if not cond: fail.append(what)

r = am.GetVersion()
check(type(r["geni_api"]) == int and r["geni_api"] == 3, "top geni_api")
code = r["code"]
check(type(code["geni_code"]) == int and code["geni_code"] == 0, "geni_code")
check(type(code["am_type"]) == str and type(code["am_code"]) == int, "am_type/am_code")
check(type(r["output"]) == str, "output")
v = r["value"]
check(type(v["geni_api"]) == int and v["geni_api"] == 3, "value geni_api")
check(type(v["geni_api_versions"]) == dict and type(v["geni_api_versions"]["3"]) == str, "geni_api_versions")
for k in ("geni_request_rspec_versions", "geni_ad_rspec_versions"):
    for e in v[k]:
        for f in ("type", "version", "schema", "namespace"):
            check(type(e[f]) == str, k + "." + f)
        check(type(e["extensions"]) == list, k + ".extensions")
check(any(c["geni_type"] == "geni_sfa" and c["geni_version"] in ("2", "3") for c in v["geni_credential_types"]), "geni_sfa")
check(type(v["geni_single_allocation"]) == int and v["geni_single_allocation"] in (0, 1), "geni_single_allocation")
check(v["geni_allocate"] in ("geni_single", "geni_disjoint", "geni_many"), "geni_allocate")

cred = [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "<signed-credential/>"}]
r = am.ListResources(cred, {"geni_rspec_version": {"type": "GENI", "version": "3"}, "geni_compressed": True})
check(r["code"]["geni_code"] == 0, "ListResources code")
ad = zlib.decompress(base64.b64decode(r["value"])).decode()
check('type="advertisement"' in ad, "ListResources decompressed")
r = am.ListResources(cred, {})
check(r["code"]["geni_code"] == 1 and "geni_rspec_version" in r["output"], "BADARGS")
r = am.Status(["urn:publicid:IDN+example+slice+s1"], cred, {})
check(all(type(s["geni_error"]) == str for s in r["value"]["geni_slivers"]), "Status geni_error")
try:
    am.CreateSliver()
    fail.append("no fault for an unknown method")
except x.Fault as f:
    check(f.faultCode == -32601, "fault code")
print("FAIL " + ", ".join(fail) if fail else "OK")
`

func TestPythonClientTLS(t *testing.T) {
	client := amtest.Python(t, pythonClient)
	p := newTestPKI(t)
	log, logs := newLogger()
	url, _ := startServer(t, NewHandler(&fakeAM{}, HandlerOptions{Logger: log}), p, true, log)
	certFile, keyFile := p.Files(p.Issue(devpki.Options{URN: aliceURN, Email: "alice@example.org"}), "alice")
	out, err := client(url, p.CertFile, certFile, keyFile)
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("python client: %v\n%s\nserver log:\n%s", err, out, logs)
	}
}

// TestOversizedBodyAnsweredForCurl (issue 13, item 8): curl sending a body
// over the limit reads the fault that names the limit, instead of
// "Connection reset by peer".
func TestOversizedBodyAnsweredForCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	p := newTestPKI(t)
	log, _ := newLogger()
	url, _ := startServer(t, NewHandler(&fakeAM{}, HandlerOptions{Logger: log}), p, false, log)
	certFile, keyFile := p.Files(p.Issue(devpki.Options{URN: aliceURN}), "alice")
	body := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(body, []byte(callHead+"<string>"+strings.Repeat("x", 16<<20)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, chunked := range []bool{false, true} {
		args := []string{"-sS", "--cacert", p.CertFile, "--cert", certFile,
			"--key", keyFile, "-H", "Content-Type: text/xml", "--data-binary", "@" + body,
			"-w", "\nHTTP %{http_code}", url}
		if chunked {
			args = append(args, "-H", "Transfer-Encoding: chunked")
		}
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "exceeds the limit of 4194304 bytes") {
			t.Fatalf("curl, 16 MiB (chunked %v): %v\n%.2000s", chunked, err, out)
		}
		t.Logf("curl, 16 MiB body (chunked %v): a fault naming the limit", chunked)
	}
}
