package geniapi

import (
	"net/http"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials"
)

// audit completes rec from the reply and hands it to the Auditor. The
// Aggregate has noted the authorization, slice and slivers on the way.
func (h *Handler) audit(rec *am.AuditRecord, resp map[string]any, started time.Time) {
	if h.opts.Auditor == nil {
		return
	}
	rec.Duration = time.Since(started)
	if code, ok := resp["code"].(map[string]any); ok {
		if n, ok := code["geni_code"].(int); ok {
			rec.Code = am.Code(n)
		}
	}
	rec.Output, _ = resp["output"].(string)
	h.opts.Auditor.Audit(rec)
}

// auditFault audits a call refused with an XML-RPC fault (unreadable or an
// unknown method): the fault code stands in for the geni_code.
func (h *Handler) auditFault(r *http.Request, method, logID string, started time.Time, code int, msg string) {
	if h.opts.Auditor == nil {
		return
	}
	rec := &am.AuditRecord{At: started, LogID: logID, Method: method, RemoteAddr: r.RemoteAddr,
		Code: am.Code(code), Output: msg, Duration: time.Since(started)}
	if caller, err := credentials.CallerFromTLS(r.TLS); err == nil {
		rec.Caller = caller.URN
	}
	h.opts.Auditor.Audit(rec)
}

// clipMethod bounds a caller-supplied method name kept in the audit trail.
func clipMethod(m string) string {
	if len(m) > 100 {
		return m[:100] + "..."
	}
	return m
}
