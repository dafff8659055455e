package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/am/geniclient"
)

func TestCredentialFiles(t *testing.T) {
	const sliceURN = "urn:publicid:IDN+geni:gpo:gcf+slice+labslice" // the JSON sample's target
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.xml")
	if err := os.WriteFile(huge, make([]byte, geniclient.MaxCredentialFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	notCred := filepath.Join(dir, "plain.txt")
	if err := os.WriteFile(notCred, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Signed XML as gcf returns it, and omni's -o JSON around it.
	c, err := credentialsFromFiles("testdata/omni-slice-cred.json", []string{"testdata/gcf-slice-cred.xml", "testdata/omni-slice-cred.json"},
		[]string{"urn:publicid:IDN+geni:gpo:gcf+slice+other"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.User, "<?xml") || len(c.Slices) != 2 {
		t.Fatalf("credentials %+v", c)
	}
	if c.Slices[0].URN != "urn:publicid:IDN+geni:gpo:gcf+slice+other" || c.Slices[1].URN != sliceURN {
		t.Errorf("slice URNs %q, %q", c.Slices[0].URN, c.Slices[1].URN)
	}
	for _, bad := range []struct {
		user   string
		slices []string
		urns   []string
		want   string
	}{
		{"missing.xml", nil, nil, "no such file"},
		{huge, nil, nil, "too large"},
		{notCred, nil, nil, "not a signed credential"},
		{"", []string{"testdata/request-1node.xml"}, nil, "no <target_urn>"},
		{"", []string{"testdata/gcf-slice-cred.xml"}, []string{"a", "b"}, "2 --slice URNs for 1"},
	} {
		if _, err := credentialsFromFiles(bad.user, bad.slices, bad.urns); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("credentialsFromFiles(%q, %q) = %v, want %q", bad.user, bad.slices, err, bad.want)
		}
	}
}

func TestAuthorityAndLeaf(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	if a, err := authorityOf([]*url.URL{u("urn:uuid:1234"), u("urn:publicid:IDN+geni:gpo:gcf+user+alice")}); err != nil || a != "geni:gpo:gcf" {
		t.Errorf("authorityOf = %q, %v", a, err)
	}
	if _, err := authorityOf([]*url.URL{u("urn:uuid:1234")}); err == nil {
		t.Error("authorityOf without a GENI URN succeeded")
	}
	chain, err := os.ReadFile("testdata/alice-cert.pem")
	if err != nil {
		t.Fatal(err)
	}
	leaf := string(leafPEM(chain))
	if strings.Count(string(chain), "BEGIN CERTIFICATE") != 2 || strings.Count(leaf, "BEGIN CERTIFICATE") != 1 || !strings.HasSuffix(leaf, "-----END CERTIFICATE-----\n") {
		t.Errorf("leafPEM:\n%s", leaf)
	}
}

func FuzzParseCredential(f *testing.F) {
	for _, name := range []string{"testdata/gcf-slice-cred.xml", "testdata/omni-slice-cred.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"geni_value": 3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := parseCredential(b)
		if err != nil {
			return
		}
		if !strings.HasPrefix(x, "<") {
			t.Fatalf("accepted %q", x)
		}
		if urn, err := targetURN(x); err == nil && !strings.HasPrefix(urn, "urn:publicid:IDN+") {
			t.Fatalf("target %q", urn)
		}
	})
}
