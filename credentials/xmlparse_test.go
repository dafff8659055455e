package credentials

import (
	"strings"
	"testing"
)

func TestParseXMLMatchesEtree(t *testing.T) {
	inputs := []string{readTestdata(t, "slice-cred.xml"), readTestdata(t, "user-cred.xml")}
	for _, c := range c14nCases {
		inputs = append(inputs, strings.Replace(c.doc, "SIG", "<s/>", 1))
	}
	inputs = append(inputs,
		"<?xml version='1.0' encoding='utf-8' standalone='yes'?><!-- c --><a><b c='&#x9;&lt;'/>x&#10;y</a><?p i?>",
		"\xef\xbb\xbf<a>bom</a>",
		"\n  <?xml version=\"1.0\"?>\n<a/>\n",
		"<a>\r\n\r</a>",
		"<a b='1\r\n2'/>",
		"<a><![CDATA[\r\n]]></a>",
		"<a xmlns:p='u'><p:b p:c='1'/></a>",
	)
	for _, in := range inputs {
		if _, err := parseXML([]byte(in)); err != nil {
			t.Errorf("parseXML(%.60q): %v", in, err)
		}
		if err := sameAsEtree([]byte(in)); err != nil {
			t.Errorf("%.60q: %v", in, err)
		}
	}
	for _, bad := range []string{
		"", "<a>", "<a></b>", "<a b='1' b='2'/>", "<a>&foo;</a>", "<a>&#0;</a>", "<p:a/>", "<a p:b='1'/>",
		"<!DOCTYPE a><a/>", "<a/><b/>", "<a/>x", "<a><!ENTITY x 'y'></a>", "<a>]]></a>", "<a><!-- -- --></a>",
		"<?xml version='1.1'?><a/>", "<?xml version='1.0' encoding='latin1'?><a/>", "<a b=1/>", "<a b='<'/>",
		"<a>\x01</a>", "<a xmlns:p=''/>", "<a\xff/>", "<a:b:c/>", "<a><?xml x?></a>", "<a b='1'c='2'/>",
	} {
		if _, err := parseXML([]byte(bad)); err == nil {
			t.Errorf("parseXML accepted %q", bad)
		}
	}
}

// FuzzParseXML checks the fast parser against etree/encoding/xml.
func FuzzParseXML(f *testing.F) {
	f.Add([]byte(readTestdata(f, "slice-cred.xml")))
	for _, c := range c14nCases {
		f.Add([]byte(strings.Replace(c.doc, "SIG", "<s/>", 1)))
	}
	f.Add([]byte("<a b='1\r\n2'>&#13;<![CDATA[x]]><?p  d ?><!--c--></a>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := sameAsEtree(data); err != nil {
			t.Fatal(err)
		}
	})
}
