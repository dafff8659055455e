package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/geniam/geniam/am/geniclient"
	"github.com/geniam/geniam/credentials/devpki"
)

// sliceCred is one slice the bench may allocate in, with its credential.
type sliceCred struct {
	URN  string
	Cred string // signed credential XML
}

// credentials is what the scenarios call with.
type credentials struct {
	User   string      // user credential XML ("" = none: ListResources is skipped)
	Slices []sliceCred // one per Allocate client
}

// credArg is the v3 credentials argument carrying one SFA credential.
func credArg(xml string) []map[string]any {
	return []map[string]any{{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": xml}}
}

// readCredentialFile reads a credential saved as raw signed XML, or as omni
// saves it with -o: a JSON struct whose geni_value is the XML.
func readCredentialFile(name string) (string, error) {
	c, err := geniclient.ReadCredentialFile(name)
	return strings.TrimSpace(c.Value), err
}

func parseCredential(b []byte) (string, error) {
	c, err := geniclient.ParseCredential(b)
	return strings.TrimSpace(c.Value), err
}

var targetURNPattern = regexp.MustCompile(`<target_urn>\s*([^<\s]+)\s*</target_urn>`)

// targetURN returns the target of a credential: its first <target_urn>, which
// is the outer credential's (a delegated credential nests its parent after).
func targetURN(xml string) (string, error) {
	m := targetURNPattern.FindStringSubmatch(xml)
	if m == nil {
		return "", errors.New("the credential has no <target_urn>")
	}
	if !strings.HasPrefix(m[1], "urn:publicid:IDN+") {
		return "", fmt.Errorf("the credential's target %q is not a GENI URN", m[1])
	}
	return m[1], nil
}

// credentialsFromFiles loads --user-cred and --slice-cred (with --slice URNs
// in the same order, or the credentials' own targets).
func credentialsFromFiles(userFile string, sliceFiles, sliceURNs []string) (*credentials, error) {
	var c credentials
	if userFile != "" {
		x, err := readCredentialFile(userFile)
		if err != nil {
			return nil, err
		}
		c.User = x
	}
	if len(sliceURNs) > len(sliceFiles) {
		return nil, fmt.Errorf("%d --slice URNs for %d --slice-cred files", len(sliceURNs), len(sliceFiles))
	}
	for i, f := range sliceFiles {
		x, err := readCredentialFile(f)
		if err != nil {
			return nil, err
		}
		urn := ""
		if i < len(sliceURNs) {
			urn = sliceURNs[i]
		} else if urn, err = targetURN(x); err != nil {
			return nil, fmt.Errorf("%s: %w; give the slice with --slice", f, err)
		}
		c.Slices = append(c.Slices, sliceCred{URN: urn, Cred: x})
	}
	return &c, nil
}

// credentialsFromCH asks a gcf-compatible clearinghouse for a user
// credential and for n new slices, named bench-<run>-<i>.
func credentialsFromCH(ctx context.Context, ch *rpcClient, certFile, authority string, n int) (*credentials, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	certs, err := devpki.ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if authority == "" {
		if authority, err = authorityOf(certs[0].URIs); err != nil {
			return nil, fmt.Errorf("%w; give --slice-authority", err)
		}
	}
	var c credentials
	// Only the leaf: gcf builds the credential's owner GID from the string.
	v, err := ch.call(ctx, "CreateUserCredential", string(leafPEM(certPEM)))
	if err != nil {
		return nil, fmt.Errorf("clearinghouse: %w", err)
	}
	if c.User, err = credentialString(v); err != nil {
		return nil, fmt.Errorf("clearinghouse CreateUserCredential: %w", err)
	}
	run := make([]byte, 3)
	_, _ = rand.Read(run)
	for i := range n {
		name := fmt.Sprintf("bench-%s-%d", hex.EncodeToString(run), i) // at most 16 characters below 1000 clients
		urn := "urn:publicid:IDN+" + authority + "+slice+" + name
		v, err := ch.call(ctx, "CreateSlice", urn)
		if err != nil {
			return nil, fmt.Errorf("clearinghouse CreateSlice %s: %w", urn, err)
		}
		x, err := credentialString(v)
		if err != nil {
			return nil, fmt.Errorf("clearinghouse CreateSlice %s: %w", urn, err)
		}
		c.Slices = append(c.Slices, sliceCred{URN: urn, Cred: x})
	}
	return &c, nil
}

// credentialString accepts what a CH returns: the XML, or a v3-style struct
// around it (CHAPI-like clearinghouses wrap every answer).
func credentialString(v any) (string, error) {
	if m, ok := v.(map[string]any); ok {
		if val, err := geniValue("clearinghouse", m); err == nil {
			v = val
		} else {
			return "", err
		}
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("answer is %s, not a credential string", geniclient.TypeName(v))
	}
	return parseCredential([]byte(s))
}

// authorityOf returns the authority part of the first GENI URN among uris.
func authorityOf(uris []*url.URL) (string, error) {
	for _, u := range uris {
		s := u.String()
		if !strings.HasPrefix(strings.ToLower(s), "urn:publicid:idn+") {
			continue
		}
		parts := strings.Split(s[len("urn:publicid:IDN+"):], "+")
		if len(parts) == 3 && parts[0] != "" {
			return parts[0], nil
		}
	}
	return "", errors.New("the client certificate has no GENI URN to take the slice authority from")
}

// leafPEM returns the first PEM block of a certificate file.
func leafPEM(b []byte) []byte {
	const end = "-----END CERTIFICATE-----"
	if i := strings.Index(string(b), end); i >= 0 {
		return append([]byte(strings.TrimSpace(string(b[:i+len(end)]))), '\n')
	}
	return b
}

// chTimeout bounds the whole credential set-up.
const chTimeout = 5 * time.Minute
