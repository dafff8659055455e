package credentials

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials/devpki"
)

// A test PKI in the GENI style: a CA root, a slice authority under it, users,
// a tool, slices, and an unrelated "evil" CA that claims the same authority.
type testPKI struct {
	dir                     string // PEM and key files for xmlsec1
	ca, sa, evil            *devpki.Identity
	alice, bob, carol, tool *devpki.Identity
	slice, slice2           *devpki.Identity
}

const testAuthority = "geniam.test"

func urn(typ, name string) string {
	return "urn:publicid:IDN+" + testAuthority + "+" + typ + "+" + name
}

// pkiOnce makes the test PKI once for all the tests of the package.
var pkiOnce = sync.OnceValues(makePKI)

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	p, err := pkiOnce()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func makePKI() (*testPKI, error) {
	dir, err := os.MkdirTemp("", "geniam-creds-pki")
	if err != nil {
		return nil, err
	}
	var pkiErr error
	p := &testPKI{dir: dir}
	must := func(id *devpki.Identity, err error) *devpki.Identity {
		if err != nil && pkiErr == nil {
			pkiErr = err
		}
		return id
	}
	p.ca = must(devpki.NewCA(devpki.Options{URN: urn("authority", "ca")}))
	p.evil = must(devpki.NewCA(devpki.Options{URN: urn("authority", "ca")}))
	if pkiErr != nil {
		return nil, pkiErr
	}
	p.sa = must(p.ca.Issue(devpki.Options{URN: urn("authority", "sa"), IsCA: true}))
	p.alice = must(p.ca.Issue(devpki.Options{URN: urn("user", "alice"), Email: "alice@geniam.test"}))
	p.bob = must(p.ca.Issue(devpki.Options{URN: urn("user", "bob"), Email: "bob@geniam.test"}))
	p.carol = must(p.ca.Issue(devpki.Options{URN: urn("user", "carol"), Email: "carol@geniam.test"}))
	p.tool = must(p.ca.Issue(devpki.Options{URN: urn("tool", "portal"), Email: "ops@geniam.test"}))
	if pkiErr != nil {
		return nil, pkiErr
	}
	p.slice = must(p.sa.Issue(devpki.Options{URN: urn("slice", "s1")}))
	p.slice2 = must(p.sa.Issue(devpki.Options{URN: urn("slice", "s2")}))
	if pkiErr != nil {
		return nil, pkiErr
	}
	for name, id := range map[string]*devpki.Identity{"ca": p.ca, "evil": p.evil, "sa": p.sa, "alice": p.alice,
		"bob": p.bob, "carol": p.carol, "tool": p.tool} {
		if _, _, err := id.WriteFiles(dir, name); err != nil {
			return nil, err
		}
		// The certificate alone, for --privkey-pem key,cert,chain...
		if err := os.WriteFile(filepath.Join(dir, name+"-leaf.pem"), id.CertPEM(), 0o644); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *testPKI) roots() *TrustRoots { return NewTrustRoots(p.ca.Cert) }

func (p *testPKI) verifier() *Verifier { return NewVerifier(p.roots(), Options{}) }

func caller(id *devpki.Identity) *am.Caller {
	return &am.Caller{URN: URNOf(id.Cert), Cert: id.Cert, Chain: append([]*x509.Certificate{id.Cert}, id.Chain...)}
}

func signer(id *devpki.Identity, h crypto.Hash) *Signer {
	return &Signer{Cert: id.Cert, Key: id.Key, Chain: id.Chain, Hash: h}
}

func certs(id *devpki.Identity) []*x509.Certificate {
	return append([]*x509.Certificate{id.Cert}, id.Chain...)
}

// --- documents built as gcf builds them, signed by xmlsec1 ---

func needXmlsec(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("xmlsec1")
	if err != nil {
		if os.Getenv("GENIAM_REQUIRE_XMLSEC") != "" {
			t.Fatal("xmlsec1 is required (GENIAM_REQUIRE_XMLSEC is set) but not installed")
		}
		t.Skip("xmlsec1 is not installed (apt-get install xmlsec1); set GENIAM_REQUIRE_XMLSEC to make this fatal")
	}
	return path
}

const rootOpen = `<signed-credential xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://www.planet-lab.org/resources/sfa/credential.xsd" xsi:schemaLocation="http://www.planet-lab.org/resources/sfa/ext/policy/1 http://www.planet-lab.org/resources/sfa/ext/policy/1/policy.xsd">`

// credXML is a <credential> element as gcf writes it. privs are "name:true".
func credXML(id string, owner, target *devpki.Identity, expires time.Time, privs []string, parent string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<credential xml:id="%s"><type>privilege</type><serial>8</serial>`, id)
	fmt.Fprintf(&b, `<owner_gid>%s</owner_gid><owner_urn>%s</owner_urn>`, owner.CertPEM(), URNOf(owner.Cert))
	fmt.Fprintf(&b, `<target_gid>%s</target_gid><target_urn>%s</target_urn>`, target.ChainPEM(), URNOf(target.Cert))
	fmt.Fprintf(&b, `<uuid/><expires>%s</expires><privileges>`, formatTime(expires))
	for _, p := range privs {
		name, deleg, _ := strings.Cut(p, ":")
		fmt.Fprintf(&b, `<privilege><name>%s</name><can_delegate>%s</can_delegate></privilege>`, name, deleg)
	}
	b.WriteString(`</privileges>`)
	if parent != "" {
		fmt.Fprintf(&b, `<parent>%s</parent>`, parent)
	}
	b.WriteString(`</credential>`)
	return b.String()
}

// sigTemplate is gcf's signature template with the given algorithms.
func sigTemplate(id, sigAlg, digestAlg, c14nAlg string) string {
	return fmt.Sprintf(`<Signature xmlns="http://www.w3.org/2000/09/xmldsig#" xml:id="Sig_%s">
  <SignedInfo>
    <CanonicalizationMethod Algorithm="%s"/>
    <SignatureMethod Algorithm="%s"/>
    <Reference URI="#%s">
      <Transforms>
        <Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
      </Transforms>
      <DigestMethod Algorithm="%s"/>
      <DigestValue></DigestValue>
    </Reference>
  </SignedInfo>
  <SignatureValue/>
  <KeyInfo>
    <X509Data>
      <X509SubjectName/>
      <X509IssuerSerial/>
      <X509Certificate/>
    </X509Data>
    <KeyValue/>
  </KeyInfo>
</Signature>`, id, c14nAlg, sigAlg, id, digestAlg)
}

func sha1Template(id string) string { return sigTemplate(id, algRSASHA1, algSHA1, algC14N) }

func sha256Template(id string) string { return sigTemplate(id, algRSASHA256, algSHA256, algC14N) }

// readTestdata returns testdata/name: the gcf samples' certificates and
// credentials.
func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeTemp writes doc to a file called name in a fresh temporary directory
// and returns its path.
func writeTemp(t testing.TB, name, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// xmlsecSign runs `xmlsec1 --sign --node-id <nodeID> --privkey-pem key,cert,chain...` on doc.
func xmlsecSign(t testing.TB, doc, nodeID string, who string) string {
	t.Helper()
	bin := needXmlsec(t)
	p := getPKI(t)
	in := writeTemp(t, "in.xml", doc)
	keys := filepath.Join(p.dir, who+"-key.pem") + "," + filepath.Join(p.dir, who+"-leaf.pem")
	switch who {
	case "sa", "alice", "bob", "carol", "tool":
		keys += "," + filepath.Join(p.dir, "ca-leaf.pem")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--sign", "--node-id", nodeID, "--privkey-pem", keys, in)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xmlsec1 --sign: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// xmlsecVerify runs `xmlsec1 --verify --node-id <nodeID> --trusted-pem ca` on doc.
func xmlsecVerify(t testing.TB, doc, nodeID string) error {
	t.Helper()
	bin := needXmlsec(t)
	p := getPKI(t)
	in := writeTemp(t, "v.xml", doc)
	out, err := exec.Command(bin, "--verify", "--node-id", nodeID, "--trusted-pem", filepath.Join(p.dir, "ca-leaf.pem"), in).CombinedOutput()
	if err != nil || !bytes.HasPrefix(out, []byte("OK")) {
		return fmt.Errorf("xmlsec1 --verify: %v: %s", err, out)
	}
	return nil
}

// signedDoc assembles a signed-credential from a credential and earlier
// signatures, adds a template for id, and has xmlsec1 sign it as who.
func signedDoc(t testing.TB, cred string, earlier []string, id, template, who string) string {
	t.Helper()
	doc := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + rootOpen + cred + `<signatures>` +
		strings.Join(earlier, "") + template + `</signatures></signed-credential>` + "\n"
	return xmlsecSign(t, doc, "Sig_"+id, who)
}

// signaturesOf returns the Signature elements of a signed document, as text.
func signaturesOf(t testing.TB, doc string) []string {
	t.Helper()
	i := strings.Index(doc, "<signatures>")
	j := strings.LastIndex(doc, "</signatures>")
	if i < 0 || j < 0 {
		t.Fatal("no signatures")
	}
	body := doc[i+len("<signatures>") : j]
	var out []string
	for body != "" {
		k := strings.Index(body, "</Signature>")
		if k < 0 {
			break
		}
		out = append(out, strings.TrimSpace(body[:k+len("</Signature>")]))
		body = body[k+len("</Signature>"):]
	}
	return out
}

// credentialOf returns the top <credential> element of a signed document, as text.
func credentialOf(t testing.TB, doc string) string {
	t.Helper()
	i := strings.Index(doc, "<credential ")
	j := strings.LastIndex(doc, "</credential>")
	if i < 0 || j < 0 {
		t.Fatal("no credential")
	}
	return doc[i : j+len("</credential>")]
}
