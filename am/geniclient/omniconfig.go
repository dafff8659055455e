// Package geniclient is the client side of GENI: omni_config, the gcf
// clearinghouse API, AM API v3 calls over TLS with the user's certificate,
// credentials as omni saves them, omni's -o file names, and the parts of a
// manifest a client acts on. cmd/geni is a thin command line over it.
//
// Nothing here is specific to geniam: the AM calls are those of the AM API v3
// with the standard options only, so the client works against any v3
// aggregate (the gcf reference AM included).
package geniclient

import (
	"bufio"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// OmniConfig is what geni reads from an omni_config file: the same sections
// and keys omni reads.
type OmniConfig struct {
	Path      string
	Omni      map[string]string    // [omni]
	Framework Framework            // the section named by default_cf (or -f)
	Users     []User               // the sections named by [omni] users
	Nicknames map[string]Aggregate // [aggregate_nicknames]
}

// Framework is the clearinghouse section of omni_config.
type Framework struct {
	Name      string // the section name (omni's framework nickname)
	Type      string // "gcf" is the one geni speaks
	CH        string // the clearinghouse URL
	Cert, Key string // the user's certificate (chain) and private key
	Authority string // the slice authority, e.g. geni:gpo:gcf
	Keys      map[string]string
}

// User is one user of [omni] users: the URN and SSH public key files
// Provision installs (geni_users).
type User struct {
	Name     string
	URN      string
	KeyFiles []string
}

// Aggregate is an aggregate as omni names it: a nickname or a URL, with its
// URN when the nickname table gives one.
type Aggregate struct {
	Nick string `json:"nickname,omitempty"`
	URN  string `json:"urn,omitempty"`
	URL  string `json:"url"`
}

// supportedFrameworks are the framework types geni can talk to. omni's
// others (pg, chapi/portal, sfa, of, gib) use clearinghouse APIs that cannot
// be tested here, so they are refused by name rather than half-spoken.
var supportedFrameworks = map[string]bool{"gcf": true}

// LocateOmniConfig finds the file as omni does: the -c name (or that name
// under ~/.gcf), else ./omni_config, else ~/.gcf/omni_config.
func LocateOmniConfig(name string) (string, error) {
	home, _ := os.UserHomeDir()
	gcfDir := filepath.Join(home, ".gcf")
	if name != "" {
		for _, p := range []string{expandHome(name), filepath.Join(gcfDir, name)} {
			if isFile(p) {
				return p, nil
			}
		}
		return "", fmt.Errorf("config file %q or %q does not exist", name, filepath.Join(gcfDir, name))
	}
	for _, p := range []string{"omni_config", filepath.Join(gcfDir, "omni_config")} {
		if isFile(p) {
			return p, nil
		}
	}
	return "", errors.New("no omni_config in the current directory or in ~/.gcf (give one with -c; make run writes var/dev/omni_config)")
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// expandHome expands a leading ~ as omni's os.path.expanduser does.
func expandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// LoadOmniConfig reads path. framework overrides [omni] default_cf (omni's -f).
func LoadOmniConfig(path, framework string) (*OmniConfig, error) {
	sections, err := readINI(path)
	if err != nil {
		return nil, err
	}
	omni, ok := sections["omni"]
	if !ok {
		return nil, fmt.Errorf("%s: no [omni] section", path)
	}
	c := &OmniConfig{Path: path, Omni: omni, Nicknames: map[string]Aggregate{}}
	if framework == "" {
		framework = omni["default_cf"]
	}
	if framework == "" {
		return nil, fmt.Errorf("%s: [omni] has no default_cf (name the clearinghouse section, or give -f)", path)
	}
	fw, ok := sections[framework]
	if !ok {
		return nil, fmt.Errorf("%s: missing framework section [%s]", path, framework)
	}
	c.Framework = Framework{Name: framework, Type: strings.TrimSpace(fw["type"]), CH: fw["ch"],
		Cert: expandHome(fw["cert"]), Key: expandHome(fw["key"]), Authority: fw["authority"], Keys: fw}
	for _, name := range splitList(omni["users"]) {
		u, ok := sections[name]
		if !ok {
			return nil, fmt.Errorf("%s: [omni] users names %q, which has no section", path, name)
		}
		user := User{Name: name, URN: u["urn"]}
		for _, k := range splitList(u["keys"]) {
			user.KeyFiles = append(user.KeyFiles, expandHome(k))
		}
		c.Users = append(c.Users, user)
	}
	for nick, v := range sections["aggregate_nicknames"] {
		parts := strings.Split(v, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		switch {
		case len(parts) == 1 && parts[0] != "":
			c.Nicknames[nick] = Aggregate{Nick: nick, URL: parts[0]}
		case len(parts) >= 2:
			c.Nicknames[nick] = Aggregate{Nick: nick, URN: parts[0], URL: parts[1]}
		}
	}
	return c, nil
}

// CheckFramework says whether geni can use the clearinghouse section.
func (c *OmniConfig) CheckFramework() error {
	fw := c.Framework
	if !supportedFrameworks[fw.Type] {
		return fmt.Errorf("framework [%s] is of type %q: geni speaks only the gcf clearinghouse API (type = gcf); use omni for %q, or give AM calls a saved credential (--slicecredfile, --usercredfile)", fw.Name, fw.Type, fw.Type)
	}
	var missing []string
	for k, v := range map[string]string{"ch": fw.CH, "cert": fw.Cert, "key": fw.Key} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("framework [%s] lacks %s", fw.Name, strings.Join(missing, ", "))
	}
	return nil
}

// Aggregate resolves omni's -a argument: a nickname of [aggregate_nicknames],
// a URL (with the URN a nickname gives it, if any), or a URN a nickname has.
func (c *OmniConfig) Aggregate(arg string) (Aggregate, error) {
	if a, ok := c.Nicknames[arg]; ok {
		if a.URL == "" {
			return Aggregate{}, fmt.Errorf("aggregate nickname %q has no URL", arg)
		}
		return a, nil
	}
	if u, err := url.Parse(arg); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
		for _, a := range c.Nicknames {
			if strings.TrimSuffix(a.URL, "/") == strings.TrimSuffix(arg, "/") {
				return Aggregate{Nick: a.Nick, URN: a.URN, URL: arg}, nil
			}
		}
		return Aggregate{URL: arg}, nil
	}
	if strings.HasPrefix(arg, "urn:publicid:IDN+") {
		for _, a := range c.Nicknames {
			if a.URN == arg {
				return a, nil
			}
		}
		return Aggregate{}, fmt.Errorf("no aggregate nickname has URN %s: give its URL", arg)
	}
	return Aggregate{}, fmt.Errorf("unknown aggregate %q: not a nickname in [aggregate_nicknames] of %s, nor an https URL", arg, c.Path)
}

// Name is how the aggregate is shown: its nickname, else its URL.
func (a Aggregate) Name() string {
	if a.Nick != "" {
		return a.Nick
	}
	return a.URL
}

// SliceURN turns a slice name into its URN at the framework's authority
// (a URN is kept as it is), as omni's slice_name_to_urn does.
func (c *OmniConfig) SliceURN(name string) (string, error) {
	if strings.HasPrefix(name, "urn:publicid:IDN+") {
		if !strings.Contains(name, "+slice+") {
			return "", fmt.Errorf("%s is not a slice URN", name)
		}
		return name, nil
	}
	if name == "" || strings.ContainsAny(name, "+: /") {
		return "", fmt.Errorf("invalid slice name %q", name)
	}
	auth := c.Framework.Authority
	if auth == "" {
		return "", fmt.Errorf("framework [%s] has no authority, so slice %q cannot be named; give its URN", c.Framework.Name, name)
	}
	return "urn:publicid:IDN+" + auth + "+slice+" + name, nil
}

// SliceName is the last part of a slice URN (a name stays a name).
func SliceName(s string) string {
	if i := strings.LastIndex(s, "+slice+"); i >= 0 {
		return s[i+len("+slice+"):]
	}
	return s
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readINI parses the subset of Python's RawConfigParser that omni_config
// files use: [sections], "key = value" or "key: value" (keys folded to lower
// case), comment lines starting with # or ;, and indented continuation lines.
func readINI(path string) (map[string]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string]string{}
	var sec map[string]string
	lastKey := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		trim := strings.TrimSpace(line)
		switch {
		case trim == "" || trim[0] == '#' || trim[0] == ';':
			continue
		case line[0] == ' ' || line[0] == '\t':
			if sec == nil || lastKey == "" {
				return nil, fmt.Errorf("%s:%d: continuation line outside a value", path, n)
			}
			sec[lastKey] += "\n" + trim
			continue
		case trim[0] == '[':
			if !strings.HasSuffix(trim, "]") {
				return nil, fmt.Errorf("%s:%d: bad section header %q", path, n, trim)
			}
			name := strings.TrimSpace(trim[1 : len(trim)-1])
			if out[name] == nil {
				out[name] = map[string]string{}
			}
			sec, lastKey = out[name], ""
			continue
		}
		if sec == nil {
			return nil, fmt.Errorf("%s:%d: %q before any [section]", path, n, trim)
		}
		i := strings.IndexAny(trim, "=:")
		if i <= 0 {
			return nil, fmt.Errorf("%s:%d: want key = value, got %q", path, n, trim)
		}
		lastKey = strings.ToLower(strings.TrimSpace(trim[:i]))
		sec[lastKey] = strings.TrimSpace(trim[i+1:])
	}
	return out, sc.Err()
}
