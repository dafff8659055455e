package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"slices"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials"
)

// Who may see what. This file is the console's only authorization code, so
// that it can move to am's authorization gate in one step:
//
//   - an operator: a client certificate whose URN is in Config.Operators, or
//     the session cookie of the operator token (Config.Token);
//   - an experimenter: any other client certificate the trusted roots vouch
//     for (the TLS layer verified it); they see their own slices only;
//   - nobody else sees anything but the login page.
//
// Downloads of /data go through the AM listener's own handler with the
// experimenter's slice credential: the same check as the API.

// viewer is who is looking.
type viewer struct {
	Operator bool
	User     string   // the certificate's URN; "" for a token session
	Slices   []string // an experimenter's slices (nil for an operator)
}

const sessionCookie = "geniam_console"

// viewerOf names the viewer of r, or returns nil when r carries neither a
// trusted certificate nor the operator token's cookie. An experimenter's
// Slices are filled in by the caller (they need the store).
func (c *Console) viewerOf(r *http.Request) *viewer {
	var user string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if caller, err := credentials.CallerFromTLS(r.TLS); err == nil {
			user = caller.URN
		}
	}
	if user != "" && slices.Contains(c.cfg.Operators, user) {
		return &viewer{Operator: true, User: user}
	}
	if ck, err := r.Cookie(sessionCookie); err == nil && c.cfg.Token != "" {
		if subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.sessionValue())) == 1 {
			return &viewer{Operator: true, User: user}
		}
	}
	if user != "" {
		return &viewer{User: user}
	}
	return nil
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
