package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds a Chromium to drive. Without one the browser tests skip,
// unless GENIAM_REQUIRE_BROWSER is set (.ci/run sets it and installs
// Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("GENIAM_REQUIRE_BROWSER") != "" {
		t.Fatal("GENIAM_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
	}
	t.Skip("no chromium: the console's browser test needs Debian's chromium (GENIAM_REQUIRE_BROWSER=1 makes this a failure)")
	return ""
}

// screenshotDir is where the browser test saves what it saw: the directory
// GENIAM_CONSOLE_SCREENSHOTS names (docs/console to refresh the docs'
// pictures), else a temporary one.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("GENIAM_CONSOLE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestConsoleInBrowser loads the console in headless Chromium against a
// served aggregate with a real sliver and checks what an operator sees: the
// nodes, the sliver's state changing on the open page when Provision runs
// (no reload: the page's own marker survives), and an audit search by slice
// and by log id. It saves a screenshot of each.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	w := newConsoleWorld(t, true)
	shots := screenshotDir(t)
	name := shortName(w.sliver)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe),
		chromedp.Flag("ignore-certificate-errors", true), // the dev PKI's aggregate certificate
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 860),
		// Nothing leaves the host: no name resolves, no updater or ping runs.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	shot := func(file string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
				return err
			}
			t.Logf("screenshot %s", filepath.Join(shots, file))
			return os.WriteFile(filepath.Join(shots, file), png, 0o644)
		})
	}
	text := func(sel string) string {
		t.Helper()
		var s string
		if err := chromedp.Run(ctx, chromedp.Text(sel, &s, chromedp.ByQuery)); err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	// Sign in with the operator token; the overview lists the sliver.
	row := "#sliver-" + name
	if err := chromedp.Run(ctx,
		chromedp.Navigate(w.consoleURL+"/login"),
		chromedp.SendKeys(`input[name=token]`, consoleToken, chromedp.ByQuery),
		chromedp.Submit(`input[name=token]`, chromedp.ByQuery),
		chromedp.WaitVisible("#summary", chromedp.ByQuery),
		chromedp.Navigate(w.consoleURL+"/?range=1h"),
		chromedp.WaitVisible(row, chromedp.ByQuery),
		// The live-update stream is open (the dot turns green).
		chromedp.WaitVisible("#live.on", chromedp.ByQuery),
	); err != nil {
		t.Fatalf("sign in and overview: %v", err)
	}
	if s := text(row); !strings.Contains(s, "geni_allocated") || !strings.Contains(s, "alice") || !strings.Contains(s, "node") {
		t.Fatalf("sliver row: %q", s)
	}
	if s := text("#summary"); !strings.Contains(s, "/3") || !strings.Contains(s, "live slivers") {
		t.Errorf("summary: %q", s)
	}

	// Provision through the AM API while the page is open: the row changes
	// without a reload.
	if err := chromedp.Run(ctx, chromedp.Evaluate(`window.geniamMarker = "before"`, nil)); err != nil {
		t.Fatal(err)
	}
	prov := w.call("Provision", []any{w.slice}, creds(w.sliceCred), map[string]any{
		"geni_rspec_version": geni3Opts["geni_rspec_version"]})
	if opsGeniCode(prov) != 0 {
		t.Fatalf("Provision: %v", prov["output"])
	}
	started := time.Now()
	var same bool
	if err := chromedp.Run(ctx,
		chromedp.Poll(`(function(){ const r = document.querySelector("`+row+`"); return r && r.textContent.includes("geni_provisioned"); })()`,
			nil, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)),
		chromedp.Evaluate(`window.geniamMarker === "before"`, &same),
	); err != nil {
		t.Fatalf("the provisioned state did not arrive on the open page: %v (row: %q)", err, text(row))
	}
	if !same {
		t.Fatal("the page was reloaded instead of updated in place")
	}
	t.Logf("Provision reached the open page %v after the call returned", time.Since(started).Round(time.Millisecond))
	// The container runs on node1's agent and exits with code 3: the
	// agent's report arrives on the same open page.
	if err := chromedp.Run(ctx,
		chromedp.Poll(`(function(){ const c = document.querySelector("`+row+` td.exit"); return c && c.textContent.trim() === "3"; })()`,
			nil, chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)),
		chromedp.Evaluate(`window.geniamMarker === "before"`, &same),
	); err != nil || !same {
		t.Fatalf("the exit code did not arrive on the open page: %v, same page %v (row: %q)", err, same, text(row))
	}
	t.Logf("the container's exit code reached the open page %v after Provision returned (row: %q)", time.Since(started).Round(time.Millisecond), text(row))
	if err := chromedp.Run(ctx, chromedp.WaitVisible(`img.chart`, chromedp.ByQuery), shot("overview.png")); err != nil {
		t.Fatal(err)
	}

	// Nodes: capacity, usage, agent health and the reason node2 and node3
	// take no slivers (their agents do not answer).
	if err := chromedp.Run(ctx, chromedp.Navigate(w.consoleURL+"/nodes"),
		chromedp.WaitVisible("#node-node3 td.health .bad", chromedp.ByQuery),
		chromedp.WaitVisible("#node-node2 td.health .bad", chromedp.ByQuery),
		chromedp.Poll(`document.querySelector("#node-node3 td.reason").textContent.includes("unreachable")`, nil, chromedp.WithPollingTimeout(20*time.Second)),
		shot("nodes.png")); err != nil {
		t.Fatal(err)
	}
	if s := text("#node-node1"); !strings.Contains(s, "reachable") || strings.Contains(s, "unreachable") || !strings.Contains(s, "1/4") {
		t.Errorf("node1: %q", s)
	}

	// The job queue: the provision job that ran the container, done.
	if err := chromedp.Run(ctx, chromedp.Navigate(w.consoleURL+"/jobs"), chromedp.WaitVisible("#jobs", chromedp.ByQuery), shot("jobs.png")); err != nil {
		t.Fatal(err)
	}
	if s := text("#jobs tbody"); !strings.Contains(s, "provision") || !strings.Contains(s, "done") || !strings.Contains(s, name) {
		t.Errorf("jobs: %q", s)
	}

	// Audit search by slice, typed into the form.
	if err := chromedp.Run(ctx,
		chromedp.Navigate(w.consoleURL+"/audit"),
		chromedp.SendKeys(`#audit-search input[name=slice]`, w.slice, chromedp.ByQuery),
		chromedp.Submit(`#audit-search input[name=slice]`, chromedp.ByQuery),
		// The result page echoes the search in the field's value attribute.
		chromedp.WaitVisible(`#audit-search input[name=slice][value^="urn:"]`, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	s := text("#audit")
	for _, want := range []string{"Allocate", "Provision", "SUCCESS"} {
		if !strings.Contains(s, want) {
			t.Errorf("audit search by slice lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "GetVersion") {
		t.Errorf("audit search by slice shows calls of no slice:\n%s", s)
	}
	if err := chromedp.Run(ctx, shot("audit.png")); err != nil {
		t.Fatal(err)
	}
	// By the log id an error reply quoted: the failed Status is found alone.
	var logID string
	if err := w.pool.QueryRow(context.Background(), "SELECT log_id FROM audit_log WHERE code_name = 'SEARCHFAILED'").Scan(&logID); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Run(ctx,
		chromedp.Navigate(w.consoleURL+"/audit?log_id="+url.QueryEscape(logID)),
		chromedp.WaitVisible("#audit", chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if s := text("#audit tbody"); !strings.Contains(s, "SEARCHFAILED") || strings.Contains(s, "Allocate") {
		t.Errorf("audit search by log id %s:\n%s", logID, s)
	}

	// The sliver's page, reached by the link in the slivers table.
	if err := chromedp.Run(ctx,
		chromedp.Navigate(w.consoleURL+"/slivers"),
		chromedp.Click(row+" td a", chromedp.ByQuery),
		chromedp.WaitVisible("#history", chromedp.ByQuery),
		shot("sliver.png"),
	); err != nil {
		t.Fatal(err)
	}
	if s := text("#history"); !strings.Contains(s, "Provision") || !strings.Contains(s, "Allocate") {
		t.Errorf("sliver history: %q", s)
	}
	if s := text("#sliver"); !strings.Contains(s, "exit code") || !strings.Contains(s, "once") {
		t.Errorf("sliver page: %q", s)
	}

	// alice's view in the browser. Headless Chromium holds no GENI
	// certificate, so a local proxy presents hers to the console, as her
	// browser would: her slice, her sliver, no operator pages.
	aliceTransport := w.browser(t, w.pki.User).Transport
	target, _ := url.Parse(w.consoleURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = aliceTransport
	asAlice := httptest.NewServer(rp)
	defer asAlice.Close()
	// The operator signs out first: cookies are per host, not per port, so
	// the proxy's pages would otherwise carry the operator's session.
	if err := chromedp.Run(ctx,
		chromedp.Click(`form[action="/logout"] button`, chromedp.ByQuery),
		chromedp.WaitVisible(`input[name=token]`, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("sign out: %v", err)
	}
	actx, cancelTab := chromedp.NewContext(ctx)
	defer cancelTab()
	if err := chromedp.Run(actx,
		chromedp.Navigate(asAlice.URL+"/"),
		chromedp.WaitVisible(row, chromedp.ByQuery),
		chromedp.WaitVisible("#live.on", chromedp.ByQuery),
		shot("experimenter.png"),
	); err != nil {
		t.Fatalf("alice's overview: %v", err)
	}
	var header, page string
	if err := chromedp.Run(actx, chromedp.Text("header", &header, chromedp.ByQuery), chromedp.Text("main", &page, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(header, "experimenter · alice") || strings.Contains(header, "Nodes") || strings.Contains(header, "Jobs") {
		t.Errorf("alice's header: %q", header)
	}
	if !strings.Contains(page, "console") || strings.Contains(page, "nodes taking slivers") {
		t.Errorf("alice's overview: %q", page)
	}

	// alice downloads /data through the console with her certificate and
	// slice credential (the form's request, made by Go: headless Chromium
	// has no GENI certificate); bob's certificate with her credential is
	// refused, as on the AM listener.
	for _, c := range []struct {
		who    string
		client *http.Client
		status int
	}{{"alice", w.browser(t, w.pki.User), http.StatusOK}, {"bob", w.browser(t, w.bob), http.StatusForbidden}} {
		resp, data := w.download(t, c.client, "data")
		if resp.StatusCode != c.status {
			t.Errorf("%s's download: %s %.300s", c.who, resp.Status, data)
			continue
		}
		if c.status == http.StatusOK {
			if names := tarNames(t, bytes.NewReader(data)); len(names) == 0 {
				t.Errorf("%s's download holds no files", c.who)
			} else {
				t.Logf("%s downloaded %d bytes of /data: %v", c.who, len(data), names)
			}
		}
	}

	// ... and the start command's whole output, through the second form.
	resp, out := w.download(t, w.browser(t, w.pki.User), "log")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/") {
		t.Errorf("alice's output download: %s %s %.300s", resp.Status, resp.Header.Get("Content-Type"), out)
	} else {
		t.Logf("alice downloaded %d bytes of output", len(out))
	}
}
