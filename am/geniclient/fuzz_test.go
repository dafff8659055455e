package geniclient

import (
	"strings"
	"testing"
)

// A manifest comes from the aggregate: reading it never panics, and what
// it yields for ssh and file names is checked or made safe.
func FuzzParseManifest(f *testing.F) {
	f.Add(manifest)
	f.Add(string(readOmniSample(f, "advertisement-omni-o-output.xml")))
	f.Add(`<rspec><node client_id="../x"><login hostname="-oProxyCommand=x" port="22"/></node></rspec>`)
	f.Fuzz(func(t *testing.T, doc string) {
		nodes, err := ParseManifest(doc)
		if err != nil {
			return
		}
		for _, n := range nodes {
			if p := FileNamePart(n.ClientID); strings.ContainsAny(p, "/\\") || strings.HasPrefix(p, ".") || p == "" {
				t.Fatalf("FileNamePart(%q) = %q", n.ClientID, p)
			}
			for _, l := range n.Logins {
				if l.Check() == nil && (strings.HasPrefix(l.Hostname, "-") || strings.HasPrefix(l.Username, "-")) {
					t.Fatalf("login %+v passed the check", l)
				}
			}
		}
		_, _ = ParseAdvertisement(doc)
	})
}

// omni_config files are the user's, but a broken one must get an error, not a panic.
func FuzzOmniConfig(f *testing.F) {
	f.Add(labConfig)
	f.Add("[omni]\ndefault_cf = f\n[f]\n type = gcf\n")
	f.Fuzz(func(t *testing.T, body string) {
		c, err := LoadOmniConfig(writeFile(t, t.TempDir(), "omni_config", body), "")
		if err != nil {
			return
		}
		_ = c.CheckFramework()
		for nick := range c.Nicknames {
			_, _ = c.Aggregate(nick)
		}
	})
}
