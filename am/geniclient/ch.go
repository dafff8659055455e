package geniclient

import (
	"context"
	"fmt"
	"os"
	"time"
)

// CH speaks the gcf clearinghouse API (omni's "gcf" framework): the dev
// clearinghouse of make run and gcf-ch.
type CH struct {
	RPC      *RPC
	CertFile string // the user's certificate file, sent to CreateUserCredential as omni does
}

// UserCredential asks for the caller's user credential.
func (c *CH) UserCredential(ctx context.Context) (Credential, error) {
	cert, err := os.ReadFile(c.CertFile)
	if err != nil {
		return Credential{}, err
	}
	v, err := c.RPC.Call(ctx, "CreateUserCredential", string(cert))
	if err != nil {
		return Credential{}, err
	}
	return credentialAnswer("CreateUserCredential", v)
}

// CreateSlice creates the slice (or, as gcf does for a slice that exists,
// returns its credential).
func (c *CH) CreateSlice(ctx context.Context, urn string) (Credential, error) {
	v, err := c.RPC.Call(ctx, "CreateSlice", urn)
	if err != nil {
		return Credential{}, err
	}
	return credentialAnswer("CreateSlice", v)
}

// SliceCredential is the slice credential: gcf's framework asks CreateSlice.
func (c *CH) SliceCredential(ctx context.Context, urn string) (Credential, error) {
	return c.CreateSlice(ctx, urn)
}

// RenewSlice extends the slice to t and returns the new expiry, read from a
// fresh slice credential.
func (c *CH) RenewSlice(ctx context.Context, urn string, t time.Time) (time.Time, error) {
	v, err := c.RPC.Call(ctx, "RenewSlice", urn, t.UTC().Format("2006-01-02T15:04:05"))
	if err != nil {
		return time.Time{}, err
	}
	if ok, _ := v.(bool); !ok {
		return time.Time{}, fmt.Errorf("the clearinghouse did not renew %s (it answered %v)", urn, v)
	}
	cred, err := c.SliceCredential(ctx, urn)
	if err != nil {
		return t, nil // renewed; the new expiry is what we asked for
	}
	return cred.Expires(), nil
}

// credentialAnswer accepts what a clearinghouse returns for a credential:
// the XML, or a v3-style struct around it.
func credentialAnswer(method string, v any) (Credential, error) {
	if m, ok := v.(map[string]any); ok {
		if code, ok := m["code"].(map[string]any); ok {
			if n, _ := code["geni_code"].(int64); n != 0 {
				out, _ := m["output"].(string)
				return Credential{}, &GENIError{Method: method, Code: int(n), Output: out}
			}
			v = m["value"]
		}
	}
	s, ok := v.(string)
	if !ok {
		return Credential{}, fmt.Errorf("%s: the answer is %s, not a credential", method, TypeName(v))
	}
	return ParseCredential([]byte(s))
}
