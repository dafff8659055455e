package credentials

import (
	"regexp"
	"strings"
	"testing"
)

// Documents that exercise the corners of C14N, each signed by xmlsec1 over
// the element with xml:id="t"; our verifier must compute the same digests
// and SignedInfo bytes as libxml2.
var c14nCases = []struct {
	name, doc string
}{
	{"attribute order across prefixes", `<r xmlns:b="urn:a" xmlns:a="urn:z"><t xml:id="t" b:x="1" a:y="2" z="3" a:a="4" b:b="5"/>SIG</r>`},
	{"default namespace undeclared", `<r xmlns="urn:d"><t xml:id="t"><u xmlns=""><v/></u><w/></t>SIG</r>`},
	{"superfluous redeclaration", `<r xmlns:p="urn:p"><t xml:id="t"><p:u xmlns:p="urn:p"><w xmlns:p="urn:q" p:k="v"/></p:u></t>SIG</r>`},
	{"escapes", "<r><t xml:id=\"t\" a=\"&#13;&#9;x&#10;&lt;&quot;&amp;&gt;'\" b=\"line1\nline2\ttab\r\nx\">text &amp; &lt; &gt; &#13; \"q\" 'a' &#x41;</t>SIG</r>"},
	{"comments and PIs", `<r><t xml:id="t"><!-- a comment --><?pi  some data ?><a/><?empty?><!----></t>SIG</r>`},
	{"CDATA", `<r><t xml:id="t"><![CDATA[a<b&c>]]>x<![CDATA[]]></t>SIG</r>`},
	{"empty elements", `<r><t xml:id="t"><e/><f></f><g a=""/></t>SIG</r>`},
	{"CRLF", "<r><t xml:id=\"t\">line1\r\nline2\rline3\n</t>SIG</r>"},
	{"xml:lang inheritance", `<r xml:lang="en" xml:space="preserve"><m xml:lang="fr"><t xml:id="t" xml:space="default"><u xml:lang="de"/></t></m>SIG</r>`},
	{"namespaces in scope at the apex", `<r xmlns="urn:default" xmlns:x="urn:x" xmlns:unused="urn:u"><m xmlns:y="urn:y"><t xml:id="t" x:a="1"><y:c/></t></m>SIG</r>`},
	{"unicode", `<r><t xml:id="t" a="é€𝄞">ünïcødé €𝄞</t>SIG</r>`},
	{"enveloped signature", `<r><t xml:id="t"><a>1</a>SIG<b>2</b></t></r>`},
}

func TestC14NAgainstXmlsec(t *testing.T) {
	needXmlsec(t)
	templates := map[string]string{
		"c14n":     sigTemplate("t", algRSASHA1, algSHA1, algC14N),
		"exc-c14n": strings.ReplaceAll(sigTemplate("t", algRSASHA256, algSHA256, algExcC14N), `<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>`, `<Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><Transform Algorithm="`+algExcC14N+`"/>`),
		"ds-prefix": regexp.MustCompile(`<(/?)([A-Z])`).ReplaceAllString(strings.Replace(sigTemplate("t", algRSASHA256, algSHA256, algC14N),
			`xmlns="http://www.w3.org/2000/09/xmldsig#"`, `xmlns:ds="http://www.w3.org/2000/09/xmldsig#"`, 1), "<${1}ds:$2"),
	}
	for _, c := range c14nCases {
		for tname, tmpl := range templates {
			t.Run(c.name+"/"+tname, func(t *testing.T) {
				doc := `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + strings.Replace(c.doc, "SIG", tmpl, 1)
				signed := xmlsecSign(t, doc, "Sig_t", "alice")
				d, err := parseDocument([]byte(signed))
				if err != nil {
					t.Fatal(err)
				}
				sig := d.ids["Sig_t"]
				if sig == nil {
					t.Fatal("no Sig_t")
				}
				s, err := d.verifySignature(sig)
				if err != nil {
					t.Fatalf("%v\n%s", err, signed)
				}
				if !s.signer.Equal(getPKI(t).alice.Cert) {
					t.Fatal("wrong signer")
				}
			})
		}
	}
}

func TestCanonicalizeDirect(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`<r xmlns:a="urn:a"><t xml:id="t" a:z="1" b="2"/></r>`, `<t xmlns:a="urn:a" b="2" xml:id="t" a:z="1"></t>`},
		{`<r xmlns="urn:d" xml:lang="en"><t xml:id="t"><u xmlns=""/></t></r>`, `<t xmlns="urn:d" xml:id="t" xml:lang="en"><u xmlns=""></u></t>`},
		{`<r><t xml:id="t"><!--c--><?p d?>&#13;&amp;</t></r>`, `<t xml:id="t"><?p d?>&#xD;&amp;</t>`},
	}
	for _, c := range cases {
		d, err := parseDocument([]byte(c.doc))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Canonicalize(d.ids["t"])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("C14N of %s\n got %s\nwant %s", c.doc, got, c.want)
		}
	}
	d, err := parseDocument([]byte(`<r xmlns:a="urn:a" xmlns:b="urn:b" xml:lang="en"><t xml:id="t" a:x="1"><b:u/></t></r>`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := CanonicalizeExclusive(d.ids["t"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := `<t xmlns:a="urn:a" xml:id="t" a:x="1"><b:u xmlns:b="urn:b"></b:u></t>`; string(got) != want {
		t.Errorf("exc-C14N\n got %s\nwant %s", got, want)
	}
}
