package console

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
	"github.com/geniam/geniam/credentials/devpki"
	"github.com/geniam/geniam/store"
)

const (
	aliceURN   = "urn:publicid:IDN+ch.test+user+alice"
	opsURN     = "urn:publicid:IDN+ch.test+user+ops"
	malloryURN = "urn:publicid:IDN+ch.test+user+mallory" // on the deny list
	sliceA     = "urn:publicid:IDN+ch.test+slice+a"
	sliceB     = "urn:publicid:IDN+ch.test+slice+b"
	token      = "a-token-of-sixteen-chars"
)

// fakeSource holds two slivers, alice's in slice a and someone else's in
// slice b; its change mark moves when mark is bumped.
type fakeSource struct {
	mark     atomic.Int64
	fail     error        // every read fails with it when set
	shutDown atomic.Value // string: the slice URN shut down
}

// Slice is the gate's read of a slice's shut-down flag.
func (f *fakeSource) Slice(ctx context.Context, urn string) (*am.Slice, error) {
	down, _ := f.shutDown.Load().(string)
	return &am.Slice{URN: urn, ShutDown: urn == down}, nil
}

func (f *fakeSource) slivers() []am.Sliver {
	return []am.Sliver{
		{URN: "urn:publicid:IDN+am.test+sliver+aaa", SliceURN: sliceA, NodeName: "n1", CreatedBy: aliceURN, Allocation: am.Provisioned, Operational: "geni_ready"},
		{URN: "urn:publicid:IDN+am.test+sliver+bbb", SliceURN: sliceB, NodeName: "n2", CreatedBy: "urn:publicid:IDN+ch.test+user+bob", Allocation: am.Allocated, Operational: "geni_pending_allocation"},
	}
}

func (f *fakeSource) Nodes(ctx context.Context) ([]store.NodeRow, error) {
	return []store.NodeRow{{Name: "n1", State: "ok", Capacity: 4, Used: 1}, {Name: "n2", State: "drained", Capacity: 2, Reason: "disk <swap>"}}, f.fail
}
func (f *fakeSource) AgentHealth(ctx context.Context) (map[string]store.AgentHealthRow, error) {
	return map[string]store.AgentHealthRow{"n1": {Reachable: true}}, f.fail
}
func (f *fakeSource) AdminSlivers(ctx context.Context, flt store.SliverFilter) ([]am.Sliver, error) {
	var out []am.Sliver
	for _, s := range f.slivers() {
		if flt.URN != "" && s.URN != flt.URN || flt.Slice != "" && s.SliceURN != flt.Slice || flt.Node != "" && s.NodeName != flt.Node {
			continue
		}
		if flt.Slices != nil && !contains(flt.Slices, s.SliceURN) {
			continue
		}
		out = append(out, s)
	}
	if flt.Limit > 0 && len(out) > flt.Limit {
		out = out[:flt.Limit]
	}
	return out, f.fail
}
func (f *fakeSource) SliverHistory(ctx context.Context, urn string) ([]store.HistoryRow, error) {
	return nil, f.fail
}
func (f *fakeSource) Jobs(ctx context.Context, flt store.JobFilter) ([]string, [][]string, error) {
	return []string{"id", "node_name", "sliver_urn", "state"}, [][]string{{"1", "n1", "urn:publicid:IDN+am.test+sliver+aaa", "done"}}, f.fail
}
func (f *fakeSource) Audit(ctx context.Context, flt store.AuditFilter) ([]store.AuditRow, error) {
	rows := []store.AuditRow{{LogID: "l1", Method: "Allocate", Code: "SUCCESS", User: aliceURN, Slice: sliceA},
		{LogID: "l2", Method: "Delete", Code: "SUCCESS", User: "urn:publicid:IDN+ch.test+user+bob", Slice: sliceB}}
	var out []store.AuditRow
	for _, r := range rows {
		if flt.User != "" && r.User != flt.User || flt.LogID != "" && r.LogID != flt.LogID {
			continue
		}
		out = append(out, r)
	}
	return out, f.fail
}
func (f *fakeSource) SlicesOfUser(ctx context.Context, user string) ([]string, error) {
	if user == aliceURN {
		return []string{sliceA}, f.fail
	}
	return []string{}, f.fail
}
func (f *fakeSource) Usage(ctx context.Context, since time.Time, step time.Duration) ([]store.UsagePoint, error) {
	return []store.UsagePoint{{At: since, Slivers: 0}, {At: time.Now(), Slivers: 2, Nodes: 1}}, f.fail
}
func (f *fakeSource) ChangeMark(ctx context.Context) (string, error) {
	return fmt.Sprint(f.mark.Load()), f.fail
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

type tester struct {
	t       *testing.T
	c       *Console
	src     *fakeSource
	ids     map[string]*tls.ConnectionState
	auditor *amtest.Auditor // the gate's
}

// newTester serves the console behind a gate whose operator is ops and
// whose deny list names mallory.
func newTester(t *testing.T) *tester {
	src := &fakeSource{}
	auditor := &amtest.Auditor{}
	gate := am.NewGate(am.GateConfig{Authorizer: &amtest.Authorizer{}, Ops: &am.OpsPolicy{Deny: []string{malloryURN}},
		Operators: []string{opsURN}, Slices: src, Auditor: auditor})
	c, err := New(Config{Source: src, Gate: gate, Token: token, Poll: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devpki.NewCA(devpki.Options{URN: "urn:publicid:IDN+ch.test+authority+sa", KeyBits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]*tls.ConnectionState{}
	for _, urn := range []string{aliceURN, opsURN, malloryURN} {
		id, err := ca.Issue(devpki.Options{URN: urn, KeyBits: 1024})
		if err != nil {
			t.Fatal(err)
		}
		ids[urn] = &tls.ConnectionState{PeerCertificates: append(append(id.Chain[:0:0], id.Cert), id.Chain...)}
	}
	return &tester{t: t, c: c, src: src, ids: ids, auditor: auditor}
}

// do serves one request as who (a URN, "token" or "" for nobody).
func (x *tester) do(who, method, target string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, body)
	if method == http.MethodPost && body != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	switch who {
	case "":
	case "token":
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: x.c.sessionValue()})
	default:
		r.TLS = x.ids[who]
	}
	w := httptest.NewRecorder()
	x.c.ServeHTTP(w, r)
	return w
}

func TestWhoSeesWhat(t *testing.T) {
	x := newTester(t)
	for _, c := range []struct {
		who, path string
		status    int
		has, not  []string
	}{
		{"", "/", 401, []string{"Operator token"}, []string{"aaa", "bbb"}},
		{"", "/nodes", 401, nil, []string{"n1"}},
		{aliceURN, "/", 200, []string{"aaa", "experimenter"}, []string{"bbb", "nodes taking slivers"}},
		{aliceURN, "/slivers?slice=" + url.QueryEscape(sliceB), 200, nil, []string{"bbb"}},
		{aliceURN, "/sliver?urn=" + url.QueryEscape("urn:publicid:IDN+am.test+sliver+bbb"), 404, []string{"no sliver"}, []string{"n2"}},
		{aliceURN, "/sliver?urn=" + url.QueryEscape("urn:publicid:IDN+am.test+sliver+aaa"), 200, []string{"geni_ready"}, nil},
		{aliceURN, "/nodes", 403, []string{"for operators"}, []string{"n1"}},
		{aliceURN, "/jobs", 403, nil, nil},
		{aliceURN, "/usage.svg", 403, nil, []string{"<svg"}},
		{aliceURN, "/audit?user=" + url.QueryEscape("urn:publicid:IDN+ch.test+user+bob"), 200, []string{"l1"}, []string{"l2"}},
		{opsURN, "/", 200, []string{"aaa", "bbb", "nodes taking slivers"}, nil},
		{opsURN, "/nodes", 200, []string{"n1", "disk &lt;swap&gt;", "reachable"}, []string{"<swap>"}},
		{"token", "/jobs", 200, []string{`href="/slivers?node=n1"`, "/sliver?urn=urn%3Apublicid"}, nil},
		{"token", "/audit", 200, []string{"l1", "l2"}, nil},
		{"token", "/usage.svg?range=7d", 200, []string{"<svg", "slivers (2 now)"}, nil},
	} {
		w := x.do(c.who, "GET", c.path, nil)
		body := w.Body.String()
		if w.Code != c.status {
			t.Errorf("%s %s: %d, want %d:\n%s", c.who, c.path, w.Code, c.status, body)
			continue
		}
		for _, s := range c.has {
			if !strings.Contains(body, s) {
				t.Errorf("%s %s lacks %q:\n%s", c.who, c.path, s, body)
			}
		}
		for _, s := range c.not {
			if strings.Contains(body, s) {
				t.Errorf("%s %s shows %q", c.who, c.path, s)
			}
		}
	}
	// The token opens a session; a wrong one does not.
	if w := x.do("", "POST", "/login", strings.NewReader("token=wrong")); w.Code != 403 || len(w.Result().Cookies()) != 0 {
		t.Errorf("wrong token: %d %v", w.Code, w.Result().Cookies())
	}
	w := x.do("", "POST", "/login", strings.NewReader("token="+token))
	if w.Code != http.StatusSeeOther || len(w.Result().Cookies()) != 1 || w.Result().Cookies()[0].Value == token {
		t.Errorf("token sign-in: %d %v", w.Code, w.Result().Cookies())
	}
	// A session cookie of another token is nobody.
	r := httptest.NewRequest("GET", "/nodes", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: strings.Repeat("0", 64)})
	rec := httptest.NewRecorder()
	x.c.ServeHTTP(rec, r)
	if rec.Code != 401 {
		t.Errorf("forged cookie: %d", rec.Code)
	}
}

// TestAccessThroughGate: the console asks the aggregate's gate (issue 15):
// an operator by certificate (the gate's operators) or by token sees
// everything, a user on the deny list nothing, an experimenter their own
// slices; the sliver page and every refusal leave an audit row (method
// Console), list pages none.
func TestAccessThroughGate(t *testing.T) {
	x := newTester(t)
	aaa, bbb := url.QueryEscape("urn:publicid:IDN+am.test+sliver+aaa"), url.QueryEscape("urn:publicid:IDN+am.test+sliver+bbb")
	rows := func() int { return len(x.auditor.Records()) }
	expect := func(who, path string, status, newRows int) *am.AuditRecord {
		t.Helper()
		before := rows()
		if w := x.do(who, "GET", path, nil); w.Code != status {
			t.Errorf("%s %s: %d, want %d\n%.400s", who, path, w.Code, status, w.Body.String())
		}
		if got := rows() - before; got != newRows {
			t.Errorf("%s %s: %d audit rows, want %d", who, path, got, newRows)
		}
		return x.auditor.Last()
	}
	// Operators: the gate's list by certificate, the token by its session.
	expect(opsURN, "/nodes", 200, 0)
	expect("token", "/nodes", 200, 0)
	rec := expect(opsURN, "/sliver?urn="+bbb, 200, 1)
	if v := rec.View(); rec.Method != "Console" || rec.Caller != opsURN || v.User != opsURN || v.SliceURN != sliceB ||
		len(v.SliverURNs) != 1 || rec.Code != am.Success || rec.Options["page"] != "sliver" {
		t.Errorf("operator's sliver view: %+v %+v", rec, v)
	}
	// An open page renders again at every change: one row per window.
	expect(opsURN, "/sliver?urn="+bbb, 200, 0)
	if rec := expect("token", "/sliver?urn="+aaa, 200, 1); rec.Caller != "" || rec.Options["via"] != "operator token" {
		t.Errorf("token's sliver view: %+v", rec)
	}

	// The deny list: refused everywhere, each refusal a row.
	rec = expect(malloryURN, "/", 403, 1)
	if rec.Code != am.Forbidden || rec.Caller != malloryURN || !strings.Contains(rec.Output, "denied") {
		t.Errorf("mallory's refusal: %+v", rec)
	}
	expect(malloryURN, "/events", 403, 1)

	// An experimenter: own slices only; a view of another's sliver is a
	// refused row that does not say whose it is.
	expect(aliceURN, "/", 200, 0)
	expect(aliceURN, "/sliver?urn="+aaa, 200, 1)
	if rec := expect(aliceURN, "/sliver?urn="+bbb, 404, 1); rec.Code != am.SearchFailed || strings.Contains(rec.Output, sliceB) {
		t.Errorf("alice's view of bob's sliver: %+v", rec)
	}
	// A shut-down slice: closed to its experimenter (at once, whatever was
	// audited lately), open to operators.
	x.src.shutDown.Store(sliceA)
	if rec := expect(aliceURN, "/sliver?urn="+aaa, 403, 1); !strings.Contains(rec.Output, "shut down") {
		t.Errorf("alice's view of her shut-down slice: %+v", rec)
	}
	expect(opsURN, "/sliver?urn="+aaa, 200, 1)
	expect("token", "/sliver?urn="+aaa, 200, 0)
}

// TestTablesAreBounded: a table shows at most its bound and says there is
// more.
func TestTablesAreBounded(t *testing.T) {
	x := newTester(t)
	got, err := x.c.listSlivers(context.Background(), store.SliverFilter{}, 1)
	if err != nil || len(got.Rows) != 1 || !got.More {
		t.Fatalf("bounded to 1: %+v %v", got, err)
	}
	if got, _ := x.c.listSlivers(context.Background(), store.SliverFilter{}, 2); len(got.Rows) != 2 || got.More {
		t.Fatalf("bounded to 2: %+v", got)
	}
}

// TestHostileRequests: odd input gets a clear answer, never a panic or a
// stack trace; a store failure is an internal error with a log id.
func TestHostileRequests(t *testing.T) {
	x := newTester(t)
	for _, path := range []string{
		"/sliver", "/sliver?urn=%ff%fe", "/sliver?urn=" + strings.Repeat("x", 10000), "/usage.svg?range=1000000h",
		"/audit?log_id=%3Cscript%3E", "/slivers?node=%00", "/static/../console.go", "/nope",
	} {
		w := x.do("token", "GET", path, nil)
		if w.Code >= 500 || strings.Contains(w.Body.String(), "<script>") || strings.Contains(w.Body.String(), "package console") {
			t.Errorf("GET %s: %d\n%.400s", path, w.Code, w.Body.String())
		}
	}
	if w := x.do("", "POST", "/login", strings.NewReader("token="+strings.Repeat("a", 1<<20))); w.Code != 403 {
		t.Errorf("huge login body: %d", w.Code)
	}
	if w := x.do(aliceURN, "POST", "/data?urn=x", nil); w.Code != 400 || !strings.Contains(w.Body.String(), "no node agents") {
		t.Errorf("download without a provisioner: %d %.300s", w.Code, w.Body.String())
	}
	x.src.fail = fmt.Errorf("connection refused")
	w := x.do("token", "GET", "/nodes", nil)
	if w.Code != 500 || !strings.Contains(w.Body.String(), "internal error; log id") || strings.Contains(w.Body.String(), "refused") {
		t.Errorf("store failure: %d %.400s", w.Code, w.Body.String())
	}
}

// TestEventsTellOfChanges: an open /events stream gets a change event at
// once (so nothing between render and subscription is lost) and one per
// change of the mark, and nothing while it stays put.
func TestEventsTellOfChanges(t *testing.T) {
	x := newTester(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go x.c.Run(ctx)
	srv := httptest.NewUnstartedServer(x.c)
	// The stream outlives the listener's ReadTimeout (cmd/geni-am sets 30 s;
	// net/http clears the deadline once a body-less request is read).
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Start()
	defer srv.Close()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: x.c.sessionValue()})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: ") {
				events <- sc.Text()
			}
		}
		close(events)
	}()
	next := func(within time.Duration) bool {
		select {
		case _, open := <-events:
			if !open {
				t.Fatal("the event stream ended")
			}
			return true
		case <-time.After(within):
			return false
		}
	}
	if !next(5 * time.Second) {
		t.Fatal("no change event on connecting")
	}
	next(time.Second) // the hub's first reading
	if next(300 * time.Millisecond) {
		t.Error("a change event while nothing changed")
	}
	time.Sleep(300 * time.Millisecond)
	x.src.mark.Add(1)
	if !next(5 * time.Second) {
		t.Fatal("no change event after a change")
	}
	if n := x.c.hub.count(); n != 1 {
		t.Errorf("%d listeners", n)
	}
	// One viewer cannot hold every stream.
	var held []chan string
	for {
		ch, ok := x.c.hub.subscribe("(operator token)")
		if !ok {
			break
		}
		held = append(held, ch)
	}
	if len(held) != maxPerViewer-1 {
		t.Errorf("the token opened %d more streams, want %d", len(held), maxPerViewer-1)
	}
	if _, ok := x.c.hub.subscribe(aliceURN); !ok {
		t.Error("alice was refused a stream because of another viewer's")
	}
	for _, ch := range held {
		x.c.hub.unsubscribe(ch)
	}
}
