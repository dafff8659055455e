package amtest

import (
	"sync"
	"time"

	"github.com/geniam/geniam/am"
)

// Authorizer is a function-field fake of am.Authorizer. With AuthorizeFunc
// nil it grants every request to the caller for a day, naming the caller as
// the user: the credentials layer has its own tests.
type Authorizer struct {
	AuthorizeFunc func(req am.AuthRequest) (*am.Authorization, error)
}

// Authorize calls AuthorizeFunc, or grants.
func (a *Authorizer) Authorize(req am.AuthRequest) (*am.Authorization, error) {
	if a != nil && a.AuthorizeFunc != nil {
		return a.AuthorizeFunc(req)
	}
	user := ""
	if req.Caller != nil {
		user = req.Caller.URN
	}
	return &am.Authorization{User: user, Expires: req.Now.Add(24 * time.Hour), Privileges: req.Privileges}, nil
}

// Auditor is an am.Auditor that keeps every record handed to it.
type Auditor struct {
	mu   sync.Mutex
	recs []*am.AuditRecord
}

// Audit keeps rec.
func (a *Auditor) Audit(rec *am.AuditRecord) {
	a.mu.Lock()
	a.recs = append(a.recs, rec)
	a.mu.Unlock()
}

// Records returns the records kept so far, oldest first.
func (a *Auditor) Records() []*am.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*am.AuditRecord(nil), a.recs...)
}

// Last returns the latest record, nil when there is none.
func (a *Auditor) Last() *am.AuditRecord {
	recs := a.Records()
	if len(recs) == 0 {
		return nil
	}
	return recs[len(recs)-1]
}
