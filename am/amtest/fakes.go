package amtest

import (
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
