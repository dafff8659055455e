package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent"
	"github.com/geniam/geniam/am/agent/imagetest"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/am/provision"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/credentials/devpki/pkitest"
	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
)

const consoleToken = "operator-token-for-tests-0123"

// consoleWorld is an aggregate with the console on, one slice of alice's
// with one allocated sliver, and a second experimenter (bob) and an
// operator (carol) with certificates of the dev clearinghouse.
type consoleWorld struct {
	*served
	slice, sliver string
	sliceCred     []byte
	bob, carol    *devpki.Identity
}

// With agents, node1 has a node agent on the Docker engine (node2 and node3
// point at addresses where none answers: unreachable) and the sliver runs
// the demo image once, bound to node1, exiting with code 3.
func newConsoleWorld(t *testing.T, agents bool) *consoleWorld {
	t.Helper()
	pki := newDevPKI(t)
	rspec := exampleRequest(t, "request-one-container.xml")
	var agentURL string
	if agents {
		var ok bool
		if rspec, agentURL, ok = consoleAgent(t, pki); !ok {
			return nil
		}
	}
	carol, err := pki.CH.IssueUser("carol", "carol@"+devenv.Authority)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := pki.CH.IssueUser("bob", "bob@"+devenv.Authority)
	if err != nil {
		t.Fatal(err)
	}
	hooks := &serveHooks{allowLocalImages: agentURL != "",
		afterMigrate: func(ctx context.Context, st *store.Store) error {
			if err := seedDemo(ctx, st); err != nil || agentURL == "" {
				return err
			}
			// node2 and node3 keep make run's addresses, where no agent of
			// this PKI answers.
			_, err := st.Pool().Exec(ctx, "UPDATE nodes SET agent_url = $1 WHERE name = 'node1'", agentURL)
			return err
		}}
	s := serveWith(t, pki, pgtest.NewDatabase(t), hooks, func(c *config.Config) {
		c.Console.Listen = "127.0.0.1:0"
		c.Console.Token = consoleToken
		c.Operators = credentials.URNOf(carol.Cert)
		c.Console.Poll = 200 * time.Millisecond
		if agentURL != "" {
			c.Agents.Cert, c.Agents.Key = pki.File("am-agent-client")
			c.Agents.CA, _ = pki.File("agents-ca")
			c.VarDir = t.TempDir()
			c.Provisioning.HealthInterval = 500 * time.Millisecond
		}
	})
	w := &consoleWorld{served: s, bob: bob, carol: carol}
	slice, sliceCred := s.newSlice("console", 24*time.Hour)
	w.slice, w.sliceCred = slice.URN, sliceCred
	alloc := s.call("Allocate", slice.URN, creds(sliceCred), rspec, map[string]any{})
	if opsGeniCode(alloc) != 0 {
		t.Fatalf("Allocate: %v", alloc["output"])
	}
	w.sliver = firstSliver(alloc)
	// A failed call for the audit search: Status of a sliver that is not there.
	s.call("Status", []any{"urn:publicid:IDN+geniam.localhost+sliver+00000000"}, creds(sliceCred), map[string]any{})
	return w
}

// consoleAgent builds the demo image and serves a node agent for node1 on a
// free loopback port until the test ends; it returns a request RSpec of one
// run-once container bound to node1 and the agent's URL. Without Docker it
// skips (or fails under GENIAM_REQUIRE_DOCKER=1) and returns ok false.
func consoleAgent(t *testing.T, pki *devenv.PKI) (request, agentURL string, ok bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if why := provision.DockerAvailable(ctx); why != "" {
		cancel()
		imagetest.NeedDocker(t, why)
		return "", "", false
	}
	images := t.TempDir()
	tar := filepath.Join(images, "demo.tar")
	tag := fmt.Sprintf("geniam.test/console/demo:%d", os.Getpid())
	sum, err := provision.BuildDemoImage(ctx, tar, tag)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	instance := fmt.Sprintf("geniam-consoletest-%d", os.Getpid())
	caFile, _ := pki.File("agents-ca")
	useNodeAgent(t)
	addr, err := startDevAgent(ctx, t.TempDir(), images, caFile, pki, "node1", "127.0.0.1", "0", instance,
		slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		imagetest.RemoveContainers(agent.LabelInstance, instance)
		// The agent dies with ctx, but a create it had sent may still
		// complete in the engine (CI runs left containers "Created").
		time.Sleep(time.Second)
		imagetest.RemoveContainers(agent.LabelInstance, instance)
		_ = imagetest.Docker("rmi", "-f", tag) // the agent loaded it from the tar under this tag
	})
	return fmt.Sprintf(`<rspec xmlns="http://www.geni.net/resources/rspec/3"
       xmlns:geniam="http://geniam.github.io/rspec/ext/geniam/1" type="request">
  <node client_id="once" component_manager_id="%s" component_id="urn:publicid:IDN+%s+node+node1">
    <sliver_type name="container"><disk_image name="%s" geniam:sha256="%s"/></sliver_type>
    <services><execute shell="exec" command="/demo -once -exit 3"/></services>
  </node>
</rspec>`, devenv.AMURN, devenv.Authority, tar, sum), "https://" + addr.String(), true
}

// browser is an HTTP client of the console: with the certificate of id (nil:
// none) and a cookie jar.
func (w *consoleWorld) browser(t *testing.T, id *devpki.Identity) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return &http.Client{Timeout: 20 * time.Second, Jar: jar, Transport: &http.Transport{TLSClientConfig: devClientTLS(t, w.pki, id)}}
}

// TestConsoleAccess checks who sees what over real TLS: nobody without a
// certificate or the token; an experimenter their own slices only; an
// operator (certificate or token) everything.
func TestConsoleAccess(t *testing.T) {
	w := newConsoleWorld(t, false)
	u := w.consoleURL
	name := shortName(w.sliver)

	// No certificate, no token: the login page, for every page and stream.
	anon := w.browser(t, nil)
	for _, p := range []string{"/", "/nodes", "/slivers", "/audit", "/sliver?urn=" + url.QueryEscape(w.sliver)} {
		if body := get(t, anon, u+p, http.StatusUnauthorized); !strings.Contains(body, "Operator token") || strings.Contains(body, name) {
			t.Errorf("anonymous %s:\n%s", p, body)
		}
	}
	get(t, anon, u+"/events", http.StatusUnauthorized)
	get(t, anon, u+"/usage.svg", http.StatusForbidden)
	resp, err := anon.PostForm(u+"/login", url.Values{"token": {"wrong-token-wrong-token"}})
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("wrong token: %v %v", resp.Status, err)
	}
	resp.Body.Close()

	// A certificate the trusted roots do not vouch for is refused in the
	// handshake, as on the AM listener.
	foreign := pkitest.New(t, devpki.Options{URN: "urn:publicid:IDN+elsewhere+authority+sa", KeyBits: 2048})
	mallory := foreign.Issue(devpki.Options{URN: "urn:publicid:IDN+elsewhere+user+mallory", KeyBits: 2048})
	if resp, err := w.browser(t, mallory).Get(u + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("an untrusted certificate got %s", resp.Status)
	}

	// alice (experimenter): her sliver, her calls, no operator pages.
	alice := w.browser(t, w.pki.User)
	body := get(t, alice, u+"/", http.StatusOK)
	if !strings.Contains(body, name) || !strings.Contains(body, "geni_allocated") || !strings.Contains(body, "experimenter") {
		t.Errorf("alice's overview lacks her sliver:\n%s", body)
	}
	get(t, alice, u+"/nodes", http.StatusForbidden)
	get(t, alice, u+"/jobs", http.StatusForbidden)
	get(t, alice, u+"/usage.svg", http.StatusForbidden)
	if body := get(t, alice, u+"/sliver?urn="+url.QueryEscape(w.sliver), http.StatusOK); !strings.Contains(body, "no /data to download") || !strings.Contains(body, "geni_pending_allocation") {
		t.Errorf("alice's sliver page:\n%s", body)
	}
	if body := get(t, alice, u+"/audit?user="+url.QueryEscape(credentials.URNOf(w.bob.Cert)), http.StatusOK); !strings.Contains(body, "Allocate") {
		t.Errorf("alice's audit (her own calls whatever the filter):\n%s", body)
	}

	// bob: a trusted certificate, but none of alice's slices.
	bob := w.browser(t, w.bob)
	if body := get(t, bob, u+"/", http.StatusOK); strings.Contains(body, name) {
		t.Errorf("bob sees alice's sliver:\n%s", body)
	}
	get(t, bob, u+"/sliver?urn="+url.QueryEscape(w.sliver), http.StatusNotFound)
	if body := get(t, bob, u+"/slivers?slice="+url.QueryEscape(w.slice), http.StatusOK); strings.Contains(body, name) {
		t.Errorf("bob lists alice's slice:\n%s", body)
	}
	if body := get(t, bob, u+"/audit?slice="+url.QueryEscape(w.slice), http.StatusOK); strings.Contains(body, "Allocate") {
		t.Errorf("bob sees alice's audit rows:\n%s", body)
	}

	// carol (operator certificate) and the token: everything.
	carol := w.browser(t, w.carol)
	for _, c := range []*http.Client{carol, anon} {
		if c == anon {
			resp, err := anon.PostForm(u+"/login", url.Values{"token": {consoleToken}})
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("token sign-in: %v %v", resp.Status, err)
			}
			resp.Body.Close()
		}
		body := get(t, c, u+"/nodes", http.StatusOK)
		for _, n := range []string{"node1", "node2", "node3"} {
			if !strings.Contains(body, `id="node-`+n+`"`) {
				t.Errorf("nodes page lacks %s:\n%s", n, body)
			}
		}
		if body := get(t, c, u+"/slivers?node=", http.StatusOK); !strings.Contains(body, name) {
			t.Errorf("operator's slivers lack %s", name)
		}
		get(t, c, u+"/jobs", http.StatusOK)
		if svg := get(t, c, u+"/usage.svg?range=1h", http.StatusOK); !strings.Contains(svg, "slivers (1 now)") {
			t.Errorf("usage chart:\n%s", svg)
		}
		if body := get(t, c, u+"/audit?node=&slice="+url.QueryEscape(w.slice), http.StatusOK); !strings.Contains(body, "SEARCHFAILED") && !strings.Contains(body, "Allocate") {
			t.Errorf("operator's audit search:\n%s", body)
		}
	}
	// Downloads need a GENI identity; without agents there is no /data.
	resp, err = anon.Post(u+"/data?urn="+url.QueryEscape(w.sliver), "multipart/form-data; boundary=x", strings.NewReader("--x--\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("token-only download: %s", resp.Status)
	}
}

// download posts the sliver page's download form (what: data or log) with
// alice's slice credential as client, and returns the answer and its body.
func (w *consoleWorld) download(t *testing.T, client *http.Client, what string) (*http.Response, []byte) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("credential", "console-cred.xml")
	_, _ = fw.Write(w.sliceCred)
	mw.Close()
	resp, err := client.Post(w.consoleURL+"/data?what="+what+"&urn="+url.QueryEscape(w.sliver), mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, data
}

// TestConsoleAudit: the console's views and downloads leave audit rows
// (issue 15): a download through the console is the AM listener's /data
// (method GetData, served or refused, with the caller's certificate), a
// sliver page is a Console row of its viewer, and a list page none.
// Real TLS, PostgreSQL, Docker and node agent.
func TestConsoleAudit(t *testing.T) {
	w := newConsoleWorld(t, true)
	if w == nil {
		return
	}
	prov := w.call("Provision", []any{w.slice}, creds(w.sliceCred), map[string]any{"geni_rspec_version": geni3Opts["geni_rspec_version"]})
	if opsGeniCode(prov) != 0 {
		t.Fatalf("Provision: %v", prov["output"])
	}
	alice, bob, carol := w.browser(t, w.pki.User), w.browser(t, w.bob), w.browser(t, w.carol)
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, data := w.download(t, alice, "data")
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("alice's download: %s %.300s", resp.Status, data)
		}
	}
	if resp, _ := w.download(t, bob, "data"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob's download with alice's credential: %s", resp.Status)
	}
	rows := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := w.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const byWhom = `SELECT count(*) FROM audit_log WHERE method = $1 AND caller_urn = $2 AND code_name = $3 AND $4 = ANY(sliver_urns)`
	waitRows := func(what string, want int, q string, args ...any) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); rows(q, args...) != want; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s: %d rows, want %d", what, rows(q, args...), want)
			}
		}
	}
	waitRows("alice's download", 1, byWhom+` AND slice_urn = $5 AND credential_digest <> ''`, "GetData", credentials.URNOf(w.pki.User.Cert), "SUCCESS", w.sliver, w.slice)
	waitRows("bob's refused download", 1, byWhom, "GetData", credentials.URNOf(w.bob.Cert), "FORBIDDEN", w.sliver)

	// A sliver page is a row of its viewer (once while they watch it); a
	// list page is none.
	before := rows(`SELECT count(*) FROM audit_log WHERE method = 'Console'`)
	get(t, alice, w.consoleURL+"/", http.StatusOK)
	get(t, carol, w.consoleURL+"/slivers", http.StatusOK)
	for range 2 {
		get(t, alice, w.consoleURL+"/sliver?urn="+url.QueryEscape(w.sliver), http.StatusOK)
		get(t, carol, w.consoleURL+"/sliver?urn="+url.QueryEscape(w.sliver), http.StatusOK)
	}
	get(t, bob, w.consoleURL+"/sliver?urn="+url.QueryEscape(w.sliver), http.StatusNotFound)
	waitRows("console rows", before+3, `SELECT count(*) FROM audit_log WHERE method = 'Console'`)
	for who, code := range map[string]string{credentials.URNOf(w.pki.User.Cert): "SUCCESS", credentials.URNOf(w.carol.Cert): "SUCCESS", credentials.URNOf(w.bob.Cert): "SEARCHFAILED"} {
		if n := rows(byWhom+` AND options->>'page' = 'sliver'`, "Console", who, code, w.sliver); n != 1 {
			t.Errorf("%s's sliver page: %d rows (%s), want 1", who, n, code)
		}
	}
}

// shortName is the last part of a URN.
func shortName(urn string) string { return urn[strings.LastIndex(urn, "+")+1:] }
