package geniapi

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/credentials/devpki"
)

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
