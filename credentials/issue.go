package credentials

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/beevik/etree"
)

// Issuing credentials, for the development clearinghouse and for tests. The
// documents have gcf's shape (credentials.md §4): a <signed-credential> with
// the PlanetLab schema attributes, one <credential xml:id="refN">, and a
// <signatures> list whose Signature references it, signed with C14N 1.0 and
// RSA, with the signer's certificate chain embedded.

// gcf's root attributes for privilege credentials.
var sfaRootAttrs = [][2]string{
	{"xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"},
	{"xsi:noNamespaceSchemaLocation", "http://www.planet-lab.org/resources/sfa/credential.xsd"},
	{"xsi:schemaLocation", "http://www.planet-lab.org/resources/sfa/ext/policy/1 http://www.planet-lab.org/resources/sfa/ext/policy/1/policy.xsd"},
}

// gcf's root attributes for ABAC (speaks-for) credentials.
var abacRootAttrs = [][2]string{
	{"xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"},
	{"xsi:noNamespaceSchemaLocation", "http://www.geni.net/resources/credential/2/credential.xsd"},
	{"xsi:schemaLocation", "http://www.protogeni.net/resources/credential/ext/policy/1 http://www.protogeni.net/resources/credential/ext/policy/1/policy.xsd"},
}

// Grant describes a privilege credential to issue.
type Grant struct {
	Owner      []*x509.Certificate // the owner's certificate, then its chain
	Target     []*x509.Certificate // the target's (slice or user) certificate, then its chain
	Expires    time.Time
	Privileges []Privilege
}

// SlicePrivileges are what a slice authority grants a slice member (gcf's
// expansion of "*" for a slice, all delegatable).
var SlicePrivileges = []Privilege{{"refresh", true}, {"embed", true}, {"bind", true}, {"control", true}, {"info", true}}

// UserPrivileges are what a user credential grants (gcf, not delegatable).
var UserPrivileges = []Privilege{{"refresh", false}, {"resolve", false}, {"info", false}}

// Issue signs a root (undelegated) privilege credential.
func Issue(signer *Signer, g Grant) ([]byte, error) {
	if len(g.Owner) == 0 || len(g.Target) == 0 {
		return nil, errors.New("credentials: a grant needs owner and target certificates")
	}
	doc, root := newSignedCredential(sfaRootAttrs)
	cred := privilegeCredential(root, "ref0", g.Owner, gidText(g.Target), URNOf(g.Target[0]), g.Expires, g.Privileges)
	sigs := root.CreateElement("signatures")
	if err := appendSignature(sigs, cred, "ref0", signer); err != nil {
		return nil, err
	}
	return serialize(doc)
}

// IssueUserCredential issues the credential a clearinghouse gives a user
// about themselves (owner = target = user).
func IssueUserCredential(signer *Signer, user []*x509.Certificate, expires time.Time) ([]byte, error) {
	return Issue(signer, Grant{Owner: user, Target: user, Expires: expires, Privileges: UserPrivileges})
}

// IssueSliceCredential issues a slice credential for owner.
func IssueSliceCredential(signer *Signer, owner, slice []*x509.Certificate, expires time.Time) ([]byte, error) {
	return Issue(signer, Grant{Owner: owner, Target: slice, Expires: expires, Privileges: SlicePrivileges})
}

// Delegate re-issues a credential to a new owner, as gcf does: the parent
// <credential> goes unchanged inside <parent>, the root's attributes and all
// earlier signatures are copied, and the delegator (who must own the parent)
// signs the new credential. privileges must be delegatable in the parent and
// expires no later than the parent's.
func Delegate(parent []byte, delegator *Signer, to []*x509.Certificate, privileges []Privilege, expires time.Time) ([]byte, error) {
	if len(to) == 0 {
		return nil, errors.New("credentials: delegation needs the new owner's certificate")
	}
	pc, err := ParseCredential(parent)
	if err != nil {
		return nil, fmt.Errorf("credentials: parent: %w", err)
	}
	p := pc.Credential
	if p.Type != TypePrivilege {
		return nil, fmt.Errorf("credentials: a %s credential cannot be delegated", p.Type)
	}
	if !delegator.Cert.Equal(p.Owner[0]) {
		return nil, fmt.Errorf("credentials: only the owner %s may delegate this credential", p.OwnerURN)
	}
	if expires.After(p.Expires) {
		return nil, fmt.Errorf("credentials: a delegation cannot outlive its parent (%s)", p.Expires.Format(time.RFC3339))
	}
	for _, cp := range privileges {
		ok := false
		for _, pp := range p.Privileges {
			ok = ok || delegatableFrom(cp, pp)
		}
		if !ok {
			return nil, fmt.Errorf("credentials: privilege %s is not delegatable from the parent", cp.Name)
		}
	}

	oldRoot := pc.doc.doc.Root()
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	root := doc.CreateElement("signed-credential")
	for _, a := range oldRoot.Attr {
		root.CreateAttr(a.FullKey(), a.Value)
	}
	id := ""
	for n := 1; id == ""; n++ {
		if _, taken := pc.doc.ids["ref"+strconv.Itoa(n)]; !taken {
			id = "ref" + strconv.Itoa(n)
		}
	}
	// The target certificate text is copied as is: the target is the same.
	targetText := p.elem.SelectElement("target_gid").Text()
	cred := privilegeCredential(root, id, to, targetText, p.TargetURN, expires, privileges)
	parentCopy := p.elem.Copy()
	cred.CreateElement("parent").AddChild(parentCopy)
	sigs := root.CreateElement("signatures")
	if old := oldRoot.SelectElement("signatures"); old != nil {
		for _, s := range old.ChildElements() {
			sigs.AddChild(s.Copy())
		}
	}
	// The parent's signatures stay valid only if its canonical form is
	// unchanged in its new place; check rather than hope.
	before, err := Canonicalize(p.elem)
	if err != nil {
		return nil, err
	}
	after, err := Canonicalize(parentCopy)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(before, after) {
		return nil, errors.New("credentials: the parent credential would not keep its canonical form")
	}
	if err := appendSignature(sigs, cred, id, delegator); err != nil {
		return nil, err
	}
	return serialize(doc)
}

// IssueSpeaksFor issues the geni_abac credential by which user lets tool
// speak for them: user.speaks_for_<user keyid> <- tool (credentials.md §8.2).
func IssueSpeaksFor(user *Signer, tool *x509.Certificate, expires time.Time) ([]byte, error) {
	doc, root := newSignedCredential(abacRootAttrs)
	cred := root.CreateElement("credential")
	cred.CreateAttr("xml:id", "ref0")
	cred.CreateElement("type").SetText(TypeABAC)
	for _, name := range []string{"serial", "owner_gid", "owner_urn", "target_gid", "target_urn", "uuid"} {
		cred.CreateElement(name)
	}
	cred.CreateElement("expires").SetText(formatTime(expires))
	rt0 := cred.CreateElement("abac").CreateElement("rt0")
	rt0.CreateElement("version").SetText("1.1")
	userKey := KeyID(user.Cert)
	head := rt0.CreateElement("head")
	principal(head, userKey, URNOf(user.Cert))
	head.CreateElement("role").SetText("speaks_for_" + userKey)
	principal(rt0.CreateElement("tail"), KeyID(tool), URNOf(tool))
	sigs := root.CreateElement("signatures")
	if err := appendSignature(sigs, cred, "ref0", user); err != nil {
		return nil, err
	}
	return serialize(doc)
}

func principal(parent *etree.Element, keyID, mnemonic string) {
	p := parent.CreateElement("ABACprincipal")
	p.CreateElement("keyid").SetText(keyID)
	if mnemonic != "" {
		p.CreateElement("mnemonic").SetText(mnemonic)
	}
}

func newSignedCredential(attrs [][2]string) (*etree.Document, *etree.Element) {
	doc := etree.NewDocument()
	doc.CreateProcInst("xml", `version="1.0" encoding="UTF-8"`)
	root := doc.CreateElement("signed-credential")
	for _, a := range attrs {
		root.CreateAttr(a[0], a[1])
	}
	return doc, root
}

func privilegeCredential(parent *etree.Element, id string, owner []*x509.Certificate, targetText, targetURN string,
	expires time.Time, privileges []Privilege) *etree.Element {
	cred := parent.CreateElement("credential")
	cred.CreateAttr("xml:id", id)
	cred.CreateElement("type").SetText(TypePrivilege)
	cred.CreateElement("serial").SetText("8")
	cred.CreateElement("owner_gid").SetText(gidText(owner))
	cred.CreateElement("owner_urn").SetText(URNOf(owner[0]))
	cred.CreateElement("target_gid").SetText(targetText)
	cred.CreateElement("target_urn").SetText(targetURN)
	cred.CreateElement("uuid")
	cred.CreateElement("expires").SetText(formatTime(expires))
	ps := cred.CreateElement("privileges")
	for _, p := range privileges {
		pe := ps.CreateElement("privilege")
		pe.CreateElement("name").SetText(p.Name)
		pe.CreateElement("can_delegate").SetText(strconv.FormatBool(p.CanDelegate))
	}
	return cred
}

// formatTime writes an expiry as gcf does (%Y-%m-%dT%H:%M:%SZ).
func formatTime(t time.Time) string {
	return t.UTC().Truncate(time.Second).Format("2006-01-02T15:04:05Z")
}

func serialize(doc *etree.Document) ([]byte, error) {
	doc.WriteSettings = etree.WriteSettings{CanonicalText: true, CanonicalAttrVal: true}
	var buf bytes.Buffer
	if _, err := doc.WriteTo(&buf); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}
