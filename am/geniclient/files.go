package geniclient

import (
	"os"
	"path/filepath"
	"strings"
)

// OutputNames are omni's options that name -o files.
type OutputNames struct {
	Prefix     string // -p / --prefix
	OutputFile string // --outputfile, with %a (aggregate) and %s (slice)
}

// FileName is omni's _construct_output_filename: --outputfile if given,
// else [prefix-][slicename-]method-server.ext, where server is a short name
// taken from the aggregate's URN (or its URL). count is how many aggregates
// the call went to (with --outputfile and several, the server is prefixed).
func (o OutputNames) FileName(slice string, agg Aggregate, method, ext string, count int) string {
	server := ServerName(agg.URL, agg.URN)
	if o.OutputFile != "" {
		name := o.OutputFile
		if strings.Contains(name, "%a") {
			name = strings.ReplaceAll(name, "%a", server)
		} else if count > 1 && server != "" {
			name = server + "-" + name
		}
		if strings.Contains(name, "%s") {
			if slice == "" {
				slice = "noslice"
			}
			name = strings.ReplaceAll(name, "%s", slice)
		}
		return name
	}
	name := method + ext
	if strings.TrimSpace(server) != "" {
		name = method + "-" + server + ext
	}
	if slice != "" {
		name = slice + "-" + name
	}
	return o.prefixed(name)
}

func (o OutputNames) prefixed(name string) string {
	p := strings.TrimSpace(o.Prefix)
	switch {
	case p == "":
		return name
	case strings.HasSuffix(p, string(os.PathSeparator)):
		return p + name
	}
	return p + "-" + name
}

// SliceCredName is the base name omni saves a slice credential under:
// [prefix-]<slice>-cred (SaveCredential adds .json).
func (o OutputNames) SliceCredName(slice string) string { return o.prefixed(slice + "-cred") }

// UserCredName is omni's [prefix-][user-]<framework>-usercred.
func (o OutputNames) UserCredName(user, framework string) string {
	name := framework + "-usercred"
	if user != "" {
		name = user + "-" + name
	}
	return o.prefixed(name)
}

// ServerName is omni's _get_server_name: the authority of the URN with
// " .:" made "-", else the URL without scheme, well-known suffixes and
// punctuation.
func ServerName(url, urn string) string {
	if urn != "" && !strings.HasPrefix(urn, "unspecified_AM_URN") && !strings.HasPrefix(urn, "http") {
		if i := strings.Index(urn, "IDN+"); i >= 0 {
			urn = urn[i+4:]
		}
		server, _, _ := strings.Cut(urn, "+")
		return strings.NewReplacer(" ", "-", ".", "-", ":", "-").Replace(server)
	}
	server := url
	if i := strings.Index(server, "://"); i >= 0 {
		server = server[i+3:]
	}
	if i := strings.Index(server, ":12369/protogeni/"); i >= 0 {
		server = server[:i] + server[i+6:]
	}
	server = strings.TrimPrefix(server, "boss.")
	for _, s := range []struct{ suffix, repl string }{
		{"/xmlrpc/am", ""}, {"/xmlrpc", ""}, {"/xmlrpc/am/1.0", "v1"}, {"/xmlrpc/am/2.0", "v2"}, {"/xmlrpc/am/3.0", "v3"},
		{"/openflow/gapi/", ""}, {":3626/foam/gapi/1", ""}, {":3626/foam/gapi/2", ""}, {"/gapi", ""}, {":12346", ""},
	} {
		if strings.HasSuffix(server, s.suffix) {
			server = server[:strings.Index(server, s.suffix)] + s.repl
			break
		}
	}
	var b strings.Builder
	for _, r := range server {
		if strings.ContainsRune(`!"#%'()*+,./:;<=>?@[\]^`+"`{|}~", r) {
			r = '-'
		}
		b.WriteRune(r)
	}
	server = strings.TrimSuffix(b.String(), "-")
	return strings.ReplaceAll(server, "--", "-") // Python's re.sub("--", "-") is one pass too
}

func writeFileMkdir(name string, b []byte) error {
	if dir := filepath.Dir(name); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(name, b, 0o644)
}

// WriteOutputFile writes an -o file (creating its directory, as omni does).
func WriteOutputFile(name string, b []byte) error { return writeFileMkdir(name, b) }
