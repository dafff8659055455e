package am

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// URN is a GENI identifier, urn:publicid:IDN+<authority>+<type>+<name>
// (credentials.md §1). ParseURN is the only parser of URNs in geniam: the
// XML-RPC edge, the aggregate, the credential checks and the RSpec code all
// read a URN the same way, so a URN one layer admits is never refused by the
// next.
type URN struct {
	// Authority is everything between IDN+ and the next '+', e.g.
	// "ch.geni.net:proj". It has no '+'; compare it case-insensitively
	// (AuthorityCovers).
	Authority string
	// Type is lower-case ("slice", "sliver", "user", "authority", "node").
	Type string
	// Name is the rest; it may itself contain '+' ("…+slice+a+b" is the
	// slice called "a+b").
	Name string
}

// URNPrefix is the canonical prefix of a GENI URN. ParseURN accepts it in
// any case; URN.String writes it like this.
const URNPrefix = "urn:publicid:IDN+"

// MaxURNLength bounds a URN: long enough for any real one, short enough that
// a hostile one costs nothing to look at.
const MaxURNLength = 1024

// ParseURN reads a GENI URN. The prefix is compared case-insensitively
// (URN:PUBLICID:IDN+ is the same URN), the type is lower-cased, the
// authority is the text up to the first '+' after the prefix, the type the
// text up to the second, and the name all the rest. Like gcf's is_valid_urn
// it refuses white space, control characters and ? / # | anywhere, and text
// that is not UTF-8; the type must be ASCII. The error names the problem and
// is fit to show a caller.
func ParseURN(s string) (URN, error) {
	if len(s) > MaxURNLength {
		return URN{}, fmt.Errorf("URN longer than %d bytes", MaxURNLength)
	}
	if len(s) < len(URNPrefix) || !strings.EqualFold(s[:len(URNPrefix)], URNPrefix) {
		return URN{}, fmt.Errorf("%q does not start with %s", clip(s), URNPrefix)
	}
	if !utf8.ValidString(s) {
		return URN{}, fmt.Errorf("URN %q is not valid UTF-8", clip(s))
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return URN{}, fmt.Errorf("URN %q contains a space or control character", clip(s))
		}
		if strings.ContainsRune("?/#|", r) {
			return URN{}, fmt.Errorf("URN %q contains %q, which a GENI URN may not", clip(s), r)
		}
	}
	parts := strings.SplitN(s[len(URNPrefix):], "+", 3)
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return URN{}, fmt.Errorf("%q is not of the form %s<authority>+<type>+<name>", clip(s), URNPrefix)
	}
	// Lower-casing must not change the type's length or merge two types
	// (Unicode case mappings do both), and GENI types are ASCII words.
	for i := 0; i < len(parts[1]); i++ {
		if parts[1][i] >= utf8.RuneSelf {
			return URN{}, fmt.Errorf("URN %q has a type that is not ASCII", clip(s))
		}
	}
	return URN{Authority: parts[0], Type: strings.ToLower(parts[1]), Name: parts[2]}, nil
}

// String is the canonical text of the URN: the prefix as URNPrefix, the type
// lower-case, authority and name as given.
func (u URN) String() string {
	return URNPrefix + u.Authority + "+" + u.Type + "+" + u.Name
}

// URNOfType parses s and checks its type: the one check the aggregate, the
// admin commands and the edge make before they look a slice up.
func URNOfType(s, typ string) (URN, error) {
	u, err := ParseURN(s)
	if err != nil {
		return URN{}, err
	}
	if u.Type != typ {
		return URN{}, fmt.Errorf("%q has type %q, want %s", clip(s), u.Type, typ)
	}
	return u, nil
}

// AuthorityCovers reports whether authority a is an authority over the
// namespace of authority sub: a's ':'-separated components are a prefix of
// sub's, compared case-insensitively (credentials.md §1.2). Every authority
// covers itself.
func AuthorityCovers(a, sub string) bool {
	ac := strings.Split(strings.ToLower(a), ":")
	sc := strings.Split(strings.ToLower(sub), ":")
	if len(ac) > len(sc) {
		return false
	}
	for i := range ac {
		if ac[i] != sc[i] {
			return false
		}
	}
	return true
}
