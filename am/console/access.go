package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials"
)

// Who may see what. The decision is the aggregate's gate (am.Gate), asked
// at every request as for any other entry point; this file is the console's
// only authorization code and adds only what is the console's own:
//
//   - a client certificate the TLS layer verified names the viewer; the gate
//     checks them (IdentityOnly: the operator's allow and deny lists) and
//     says whether they are an operator (the configuration's operators);
//   - the session cookie of the operator token (Config.Token) is an
//     operator too: it names nobody, so the gate's lists have nobody to
//     check, but its views are audited like any other;
//   - an operator sees everything; any other viewer sees their own slices
//     only, and a slice shut down only while the gate lets them (never);
//   - nobody else sees anything but the login page.
//
// What is audited (one audit_log row, method Console): the sliver page,
// which shows one slice's data (states, history, output), at most once per
// viewer and sliver every auditEvery (an open page renders again at every
// change); and every refusal. The list pages (overview, slivers, nodes,
// jobs, audit) and /events are decided by the gate at every request but
// leave no row: an open page renders again at every change, up to once a
// second, and a row each would write more audit than the calls it records.
// Downloads of /data go through the AM listener's own handler with the
// experimenter's slice credential, which leaves its own row (GetData).

// viewer is who is looking.
type viewer struct {
	Operator bool
	User     string   // the certificate's URN; "" for a token session
	Slices   []string // an experimenter's slices (nil for an operator)
	caller   *am.Caller
}

const sessionCookie = "geniam_console"

// consoleMethod names console requests in the audit trail and in messages.
const consoleMethod = "Console"

// viewerOf names the viewer of r and asks the gate about them. It returns
// nil, nil when r carries neither a trusted certificate nor the operator
// token's cookie, and the gate's refusal (audited) when it refuses. An
// experimenter's Slices are filled in by who (they need the store).
func (c *Console) viewerOf(r *http.Request) (*viewer, error) {
	var caller *am.Caller
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if cl, err := credentials.CallerFromTLS(r.TLS); err == nil && cl.URN != "" {
			caller = cl
		}
	}
	token := c.tokenSession(r)
	if caller == nil && !token {
		return nil, nil
	}
	v := &viewer{Operator: token, caller: caller}
	if caller == nil {
		return v, nil
	}
	v.User = caller.URN
	ctx, finish := c.startAudit(r, v, "")
	grant, err := c.cfg.Gate.Check(ctx, am.Access{Method: consoleMethod, Caller: caller, IdentityOnly: true})
	if err != nil {
		// A refusal is rare and worth its row; a page view granted here
		// leaves none (see above).
		finish(err)
		return nil, err
	}
	v.Operator = v.Operator || grant.Operator
	return v, nil
}

// signedIn is viewerOf for the requests that are not pages: it answers
// the refusal, or 401 when nobody signed in, and returns nil then.
func (c *Console) signedIn(w http.ResponseWriter, r *http.Request) *viewer {
	v, err := c.viewerOf(r)
	switch {
	case err != nil:
		c.fail(w, r, err)
	case v == nil:
		http.Error(w, "sign in first", http.StatusUnauthorized)
	}
	return v
}

// startAudit starts the audit record of a console request (page names it in the
// record's options); the caller finishes it when the request is audited.
func (c *Console) startAudit(r *http.Request, v *viewer, page string) (context.Context, func(error)) {
	ctx, finish := c.cfg.Gate.Audit(r.Context(), consoleMethod, "", r.RemoteAddr, v.caller)
	opts := map[string]any{"via": "certificate"}
	if v.caller == nil {
		opts["via"] = "operator token"
	}
	if page != "" {
		opts["page"] = page
	}
	am.AuditFrom(ctx).Options = opts
	return ctx, finish
}

// openSlice decides whether v may see the data of sliver in slice: the
// console's rule (own slices only; the same answer for "not yours" and
// "unknown", so no probing for URNs), then the gate (allow/deny and the
// shut-down rule, at every view). The view is audited as page, at most once
// per viewer and sliver every auditEvery; a refusal always.
func (c *Console) openSlice(r *http.Request, v *viewer, page, slice, sliver string) error {
	ctx, finish := c.startAudit(r, v, page)
	am.AuditFrom(ctx).NoteSlivers(sliver)
	var err error
	switch {
	case slice == "" || !v.seesSlice(slice):
		err = am.Errorf(am.SearchFailed, "no sliver %s that you can see", sliver)
	case v.caller == nil:
		// A token session names no one for the lists; it is an operator,
		// whom the shut-down rule exempts.
		am.AuditFrom(ctx).NoteSlice(slice)
	default:
		_, err = c.cfg.Gate.Check(ctx, am.Access{Method: consoleMethod, Caller: v.caller, IdentityOnly: true,
			Slice: slice, ShutDownOK: v.Operator})
	}
	if err != nil || c.views.due(v.User+" "+sliver) {
		finish(err)
	}
	return err
}

// auditEvery is how often one viewer's views of one sliver leave a row.
const auditEvery = 10 * time.Minute

// maxAuditedViews bounds the memory of recent audited views.
const maxAuditedViews = 10000

// audited remembers when each viewer's view of a sliver was last audited.
type audited struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether the view key is to be audited now, and if so notes
// that it is.
func (a *audited) due(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, ok := a.last[key]; ok && time.Since(at) < auditEvery {
		return false
	}
	if a.last == nil || len(a.last) >= maxAuditedViews {
		a.last = map[string]time.Time{} // forgetting costs only an extra row
	}
	a.last[key] = time.Now()
	return true
}

// tokenSession reports whether r carries the operator token's session cookie.
func (c *Console) tokenSession(r *http.Request) bool {
	ck, err := r.Cookie(sessionCookie)
	return err == nil && c.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.sessionValue())) == 1
}

// tokenOK checks a token typed on the login page.
func (c *Console) tokenOK(token string) bool {
	if c.cfg.Token == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(c.cfg.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// sessionValue is what the session cookie holds: derived from the token, so
// the token itself never sits in the browser, and changing the token ends
// every session.
func (c *Console) sessionValue() string {
	m := hmac.New(sha256.New, []byte(c.cfg.Token))
	m.Write([]byte("geniam console session"))
	return hex.EncodeToString(m.Sum(nil))
}

// seesSlice reports whether v may see slice.
func (v *viewer) seesSlice(slice string) bool {
	return v.Operator || slices.Contains(v.Slices, slice)
}

// forbidden is the answer to an experimenter asking for an operator page.
var forbidden = am.Errorf(am.Forbidden, "this page is for operators (an operator certificate or the operator token)")
