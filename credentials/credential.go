package credentials

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/beevik/etree"
)

// Credential types (the <type> element).
const (
	TypePrivilege = "privilege" // geni_sfa
	TypeABAC      = "abac"      // geni_abac
)

// maxDelegation bounds the parent chain of a credential.
const maxDelegation = 16

// Privilege is one <privilege> of a credential, after "*" expansion.
type Privilege struct {
	Name        string
	CanDelegate bool
}

// Credential is one <credential> element: the signed credential itself, or a
// parent it was delegated from.
type Credential struct {
	ID         string // xml:id, what its signature references
	Type       string // TypePrivilege or TypeABAC
	Owner      []*x509.Certificate
	OwnerURN   string // from the owner certificate
	Target     []*x509.Certificate
	TargetURN  string // from the target certificate
	Expires    time.Time
	Privileges []Privilege
	Parent     *Credential    // the credential this one was delegated from
	ABAC       *ABACStatement // for TypeABAC

	elem *etree.Element
}

// ABACStatement is the RT0 statement of a geni_abac credential, version 1.1:
// Head.Role <- Tails (credentials.md §8.1).
type ABACStatement struct {
	Version string
	Head    ABACRole
	Tails   []ABACRole
}

// ABACRole is a principal (by key id) with an optional role.
type ABACRole struct {
	KeyID       string
	Mnemonic    string
	Role        string
	LinkingRole string
}

// SignedCredential is a parsed <signed-credential> document. It keeps the
// bytes it was parsed from: nothing is ever re-encoded for verification.
type SignedCredential struct {
	Raw        []byte
	Digest     [32]byte // sha256 of Raw
	Credential *Credential

	doc        *document
	signatures map[string]*etree.Element // by the id their Reference names
}

// ParseCredential parses a signed credential without verifying it. It refuses
// documents larger than MaxCredentialSize, with a DOCTYPE, or with an xml:id
// used twice.
func ParseCredential(raw []byte) (*SignedCredential, error) {
	d, err := parseDocument(raw)
	if err != nil {
		return nil, err
	}
	root := d.doc.Root()
	if root.Tag != "signed-credential" || root.Space != "" {
		return nil, fmt.Errorf("root element is <%s>, not <signed-credential>", root.FullTag())
	}
	// credential.xsd allows nothing else: content outside the signed
	// credential is not covered by any signature, so it is refused rather
	// than ignored (the acceptance tests' alteredObject case inserts <foo/>).
	for _, child := range root.ChildElements() {
		if child.Space != "" || (child.Tag != "credential" && child.Tag != "signatures") {
			return nil, fmt.Errorf("signed-credential has an unsigned <%s> element; only credential and signatures are allowed", child.FullTag())
		}
	}
	creds := root.SelectElements("credential")
	if len(creds) != 1 {
		return nil, fmt.Errorf("signed-credential has %d credential elements, want 1", len(creds))
	}
	c, err := parseCredentialElement(creds[0], 0)
	if err != nil {
		return nil, err
	}
	sc := &SignedCredential{Raw: raw, Digest: sha256.Sum256(raw), Credential: c, doc: d,
		signatures: map[string]*etree.Element{}}
	if sigs := root.SelectElements("signatures"); len(sigs) > 1 {
		return nil, errors.New("signed-credential has more than one signatures element")
	} else if len(sigs) == 1 {
		for _, s := range sigs[0].ChildElements() {
			if !isSignature(s) {
				continue
			}
			if len(sc.signatures) >= maxSignatures {
				return nil, errors.New("too many signatures")
			}
			id := referenceID(s)
			if id == "" {
				return nil, errors.New("a signature has no usable #id reference")
			}
			if _, dup := sc.signatures[id]; dup {
				return nil, fmt.Errorf("two signatures reference credential %s", id)
			}
			sc.signatures[id] = s
		}
	}
	return sc, nil
}

// Chain returns the credential and its parents, the credential first.
func (sc *SignedCredential) Chain() []*Credential {
	var out []*Credential
	for c := sc.Credential; c != nil; c = c.Parent {
		out = append(out, c)
	}
	return out
}

func parseCredentialElement(el *etree.Element, depth int) (*Credential, error) {
	if depth > maxDelegation {
		return nil, fmt.Errorf("delegation chain is deeper than %d", maxDelegation)
	}
	c := &Credential{elem: el}
	for _, a := range el.Attr {
		if a.Space == "xml" && a.Key == "id" {
			c.ID = a.Value
		}
	}
	if c.ID == "" {
		return nil, errors.New("credential has no xml:id")
	}
	var err error
	text := func(name string) (string, error) {
		es := el.SelectElements(name)
		if len(es) > 1 {
			return "", fmt.Errorf("credential %s has %d %s elements", c.ID, len(es), name)
		}
		if len(es) == 0 {
			return "", nil
		}
		return strings.TrimSpace(es[0].Text()), nil
	}
	if c.Type, err = text("type"); err != nil {
		return nil, err
	}
	switch c.Type {
	case TypePrivilege, TypeABAC:
	case "":
		return nil, fmt.Errorf("credential %s has no type", c.ID)
	default:
		return nil, fmt.Errorf("credential %s has unsupported type %q", c.ID, c.Type)
	}
	for _, part := range []struct {
		name  string
		certs *[]*x509.Certificate
		urn   *string
	}{{"owner", &c.Owner, &c.OwnerURN}, {"target", &c.Target, &c.TargetURN}} {
		gid, err := text(part.name + "_gid")
		if err != nil {
			return nil, err
		}
		if *part.certs, err = parseGID(gid); err != nil {
			return nil, fmt.Errorf("credential %s %s_gid: %v", c.ID, part.name, err)
		}
		urnText, err := text(part.name + "_urn")
		if err != nil {
			return nil, err
		}
		if len(*part.certs) == 0 {
			if c.Type == TypePrivilege {
				return nil, fmt.Errorf("credential %s has no %s certificate", c.ID, part.name)
			}
			continue
		}
		*part.urn = URNOf((*part.certs)[0])
		if *part.urn == "" {
			return nil, fmt.Errorf("credential %s: the %s certificate has no GENI URN", c.ID, part.name)
		}
		// gcf trusts the certificate's URN and ignores <owner_urn>; ProtoGENI
		// reads <owner_urn>. Refuse a credential where they disagree.
		if urnText != "" && !strings.EqualFold(urnText, *part.urn) {
			return nil, fmt.Errorf("credential %s: %s_urn %s differs from the %s certificate's %s",
				c.ID, part.name, urnText, part.name, *part.urn)
		}
	}
	exp, err := text("expires")
	if err != nil {
		return nil, err
	}
	if c.Expires, err = parseTime(exp); err != nil {
		return nil, fmt.Errorf("credential %s expires: %v", c.ID, err)
	}

	switch c.Type {
	case TypePrivilege:
		if c.Privileges, err = parsePrivileges(el, c.TargetURN); err != nil {
			return nil, fmt.Errorf("credential %s: %v", c.ID, err)
		}
	case TypeABAC:
		if c.ABAC, err = parseABAC(el); err != nil {
			return nil, fmt.Errorf("credential %s: %v", c.ID, err)
		}
	}

	parents := el.SelectElements("parent")
	if len(parents) > 1 {
		return nil, fmt.Errorf("credential %s has %d parent elements", c.ID, len(parents))
	}
	if len(parents) == 1 {
		if c.Type == TypeABAC {
			return nil, errors.New("ABAC credentials cannot be delegated")
		}
		pcs := parents[0].SelectElements("credential")
		if len(pcs) != 1 {
			return nil, fmt.Errorf("parent of credential %s holds %d credentials, want 1", c.ID, len(pcs))
		}
		if c.Parent, err = parseCredentialElement(pcs[0], depth+1); err != nil {
			return nil, err
		}
		if c.Parent.Type != c.Type {
			return nil, fmt.Errorf("credential %s has a parent of type %s", c.ID, c.Parent.Type)
		}
	}
	return c, nil
}

func parsePrivileges(el *etree.Element, targetURN string) ([]Privilege, error) {
	ps := el.SelectElements("privileges")
	if len(ps) != 1 {
		return nil, fmt.Errorf("%d privileges elements, want 1", len(ps))
	}
	var out []Privilege
	for _, p := range ps[0].SelectElements("privilege") {
		name := strings.TrimSpace(p.SelectElement("name").NotNil().Text())
		if name == "" {
			return nil, errors.New("a privilege has no name")
		}
		deleg := false
		if d := p.SelectElement("can_delegate"); d != nil {
			switch strings.ToLower(strings.TrimSpace(d.Text())) {
			case "1", "true":
				deleg = true
			case "0", "false", "":
			default:
				return nil, fmt.Errorf("privilege %s: can_delegate %q is not a boolean", name, d.Text())
			}
		}
		// "*" stands for the default rights of the target's type, each
		// delegatable as the "*" was (gcf Credential.decode).
		if name == "*" {
			if rights := defaultRights(targetTypeOf(targetURN)); rights != nil {
				for _, r := range rights {
					out = append(out, Privilege{Name: r, CanDelegate: deleg})
				}
				continue
			}
		}
		out = append(out, Privilege{Name: name, CanDelegate: deleg})
	}
	return out, nil
}

func parseABAC(el *etree.Element) (*ABACStatement, error) {
	rt0 := el.FindElement("abac/rt0")
	if rt0 == nil {
		return nil, errors.New("ABAC credential has no abac/rt0 statement")
	}
	st := &ABACStatement{Version: strings.TrimSpace(rt0.SelectElement("version").NotNil().Text())}
	if st.Version != "1.1" {
		return nil, fmt.Errorf("ABAC statement version %q is not supported (want 1.1)", st.Version)
	}
	role := func(e *etree.Element) ABACRole {
		p := e.SelectElement("ABACprincipal").NotNil()
		return ABACRole{
			KeyID:       strings.ToLower(strings.TrimSpace(p.SelectElement("keyid").NotNil().Text())),
			Mnemonic:    strings.TrimSpace(p.SelectElement("mnemonic").NotNil().Text()),
			Role:        strings.TrimSpace(e.SelectElement("role").NotNil().Text()),
			LinkingRole: strings.TrimSpace(e.SelectElement("linking_role").NotNil().Text()),
		}
	}
	heads := rt0.SelectElements("head")
	if len(heads) != 1 {
		return nil, fmt.Errorf("ABAC statement has %d heads, want 1", len(heads))
	}
	st.Head = role(heads[0])
	for _, t := range rt0.SelectElements("tail") {
		st.Tails = append(st.Tails, role(t))
	}
	if st.Head.KeyID == "" || st.Head.Role == "" || len(st.Tails) == 0 {
		return nil, errors.New("ABAC statement lacks a head key id, head role or tail")
	}
	return st, nil
}

// parseTime reads an xs:dateTime: RFC 3339, fractional seconds allowed, UTC
// when no zone is given.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	return time.Time{}, fmt.Errorf("%q is not a date and time", s)
}
