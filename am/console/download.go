package console

import (
	"bytes"
	"io"
	"net/http"

	"github.com/geniam/geniam/am"
)

// maxCredentialUpload bounds the form a download posts (a credential with a
// long delegation chain is a few tens of KiB).
const maxCredentialUpload = 1 << 20

// download is POST /data?urn=<sliver>[&what=log]: the sliver page's forms,
// with the experimenter's slice credential file. It is handed, as the raw body
// of POST /data/<name>.tar (or .log, the start command's whole output), to the
// AM listener's handler: the same client
// certificate (this listener verified it against the same roots) and the
// same credential check as a download with curl.
func (c *Console) download(w http.ResponseWriter, r *http.Request) {
	v := c.signedIn(w, r)
	if v == nil {
		return
	}
	if c.cfg.Data == nil {
		c.renderError(w, r, v, am.Errorf(am.Unsupported, "this aggregate runs no node agents, so there is no /data to download"))
		return
	}
	if v.User == "" {
		c.renderError(w, r, v, am.Errorf(am.Forbidden, "downloading /data needs your GENI certificate in the browser and your slice credential (the operator token is not a GENI identity)"))
		return
	}
	u, err := am.ParseURN(r.URL.Query().Get("urn"))
	if err != nil || u.Type != "sliver" {
		c.renderError(w, r, v, am.Errorf(am.BadArgs, "which sliver? POST /data?urn=<sliver URN>"))
		return
	}
	suffix := ".tar"
	switch r.URL.Query().Get("what") {
	case "", "data":
	case "log":
		suffix = ".log"
	default:
		c.renderError(w, r, v, am.Errorf(am.BadArgs, "what=data (the /data tar) or what=log (the start command's output)"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxCredentialUpload+64<<10)
	f, _, err := r.FormFile("credential")
	if err != nil {
		c.renderError(w, r, v, am.Errorf(am.MissingArgs, "choose your slice credential file (omni saves it with -o) before downloading"))
		return
	}
	defer f.Close()
	cred, err := io.ReadAll(io.LimitReader(f, maxCredentialUpload+1))
	if err != nil || len(cred) > maxCredentialUpload {
		c.renderError(w, r, v, am.Errorf(am.TooBig, "the credential file is larger than %d bytes", maxCredentialUpload))
		return
	}
	inner := r.Clone(r.Context())
	inner.URL.Path = "/data/" + u.Name + suffix
	inner.URL.RawQuery = ""
	inner.Body = io.NopCloser(bytes.NewReader(cred))
	inner.ContentLength = int64(len(cred))
	inner.Header.Set("Content-Type", "application/xml")
	c.cfg.Data.ServeHTTP(w, inner)
}
