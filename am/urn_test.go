package am

import (
	"strings"
	"testing"
)

func TestParseURN(t *testing.T) {
	cases := []struct {
		in              string
		auth, typ, name string
		ok              bool
	}{
		{"urn:publicid:IDN+geni:gpo:gcf+slice+s1", "geni:gpo:gcf", "slice", "s1", true},
		{"urn:publicid:IDN+am.test+sliver+ab12", "am.test", "sliver", "ab12", true},
		// The first case: the authority ends at the first '+', the
		// type at the second; the name keeps the rest (credentials.md §1).
		{"urn:publicid:IDN+a+slice+a+b", "a", "slice", "a+b", true},
		{"urn:publicid:IDN+emulab.net:proj+slice+a+b", "emulab.net:proj", "slice", "a+b", true},
		// The second case: the prefix in any case is the same URN.
		{"URN:PUBLICID:IDN+ch.geni.net+slice+x", "ch.geni.net", "slice", "x", true},
		{"urn:publicid:idn+ch.geni.net+SLICE+x", "ch.geni.net", "slice", "x", true},
		{"urn:publicid:IDN+a+slice+", "", "", "", false},
		{"urn:publicid:IDN++slice+x", "", "", "", false},
		{"urn:publicid:IDN+a+slice", "", "", "", false},
		{"urn:publicid:IDN+a++x", "", "", "", false},
		{"urn:publicid:a+slice+x", "", "", "", false},
		{"http://x", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x y", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x\x00", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x/y", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x?y", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x#y", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x|y", "", "", "", false},
		{"urn:publicid:IDN+a+slice+" + strings.Repeat("x", MaxURNLength), "", "", "", false},
		{"", "", "", "", false},
		// Found by FuzzParseURN: lower-casing a type of bytes that are not
		// UTF-8 (or of some Unicode letters) lengthens it, past MaxURNLength.
		{"urn:puBliCid:IDN+0+" + strings.Repeat("\xd2", 340) + "0+0", "", "", "", false},
		{"urn:publicid:IDN+a+" + strings.Repeat("Ⱥ", 400) + "+x", "", "", "", false},
		{"urn:publicid:IDN+a+slice+x\xff", "", "", "", false},
		{"urn:publicid:IDN+geni.müller.de+slice+straße", "geni.müller.de", "slice", "straße", true},
	}
	for _, c := range cases {
		u, err := ParseURN(c.in)
		if (err == nil) != c.ok || u.Authority != c.auth || u.Type != c.typ || u.Name != c.name {
			t.Errorf("ParseURN(%q) = %+v, %v", c.in, u, err)
		}
		if err != nil && strings.Contains(err.Error(), strings.Repeat("x", 300)) {
			t.Errorf("ParseURN error repeats a long URN in full: %.80s", err)
		}
	}
}

func TestURNCanonical(t *testing.T) {
	u, err := ParseURN("URN:PUBLICID:IDN+ch.geni.net:Proj+Slice+My+Slice")
	if want := "urn:publicid:IDN+ch.geni.net:Proj+slice+My+Slice"; err != nil || u.String() != want {
		t.Fatalf("canonical text %q, %v; want %q", u.String(), err, want)
	}
	if _, err := URNOfType("urn:publicid:IDN+a+user+bob", "slice"); err == nil || !strings.Contains(err.Error(), `type "user"`) {
		t.Fatalf("URNOfType accepted a user URN as a slice, or said so unclearly: %v", err)
	}
}

func TestAuthorityCovers(t *testing.T) {
	for _, c := range []struct {
		a, sub string
		want   bool
	}{
		{"geni:gpo:gcf", "geni:gpo:gcf", true},
		{"GENI:gpo", "geni:gpo:gcf", true},
		{"geni:gpo:gcf", "geni:gpo", false},
		{"geni:gp", "geni:gpo:gcf", false},
	} {
		if got := AuthorityCovers(c.a, c.sub); got != c.want {
			t.Errorf("AuthorityCovers(%q, %q) = %v", c.a, c.sub, got)
		}
	}
}

// FuzzParseURN: whatever is accepted has three non-empty parts, an authority
// and type without '+', nothing a GENI URN forbids, and a canonical text that
// parses back to the same URN.
func FuzzParseURN(f *testing.F) {
	for _, s := range []string{"urn:publicid:IDN+geni:gpo:gcf+slice+s1", "urn:publicid:IDN+a+slice+a+b",
		"URN:PUBLICID:IDN+a+SLICE+x", "urn:publicid:IDN+++", "urn:publicid:IDN+a+b", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURN(s)
		if err != nil {
			return
		}
		if u.Authority == "" || u.Type == "" || u.Name == "" || strings.Contains(u.Authority+u.Type, "+") ||
			strings.ContainsAny(s, " \t\r\n?/#|") || u.Type != strings.ToLower(u.Type) {
			t.Fatalf("%q accepted as %+v", s, u)
		}
		back, err := ParseURN(u.String())
		if err != nil || back != u {
			t.Fatalf("%q → %q → %+v, %v", s, u.String(), back, err)
		}
		if !strings.EqualFold(u.String(), s) {
			t.Fatalf("canonical %q of %q changed more than the case of the prefix and type", u.String(), s)
		}
	})
}
