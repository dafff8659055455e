package geniclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Credential is one entry of the AM API v3 credentials argument.
type Credential struct {
	Type    string `json:"geni_type"`
	Version string `json:"geni_version"`
	Value   string `json:"geni_value"`
}

// Arg is the credential as an XML-RPC struct.
func (c Credential) Arg() map[string]any {
	return map[string]any{"geni_type": c.Type, "geni_version": c.Version, "geni_value": c.Value}
}

// Args is the credentials argument of an AM API v3 call.
func Args(creds ...Credential) []any {
	out := make([]any, 0, len(creds))
	for _, c := range creds {
		out = append(out, c.Arg())
	}
	return out
}

// WrapCredential wraps signed credential XML as omni's wrap_cred does:
// an ABAC credential (speaks-for) is geni_abac 1, anything else geni_sfa 3.
func WrapCredential(xml string) Credential {
	if strings.Contains(xml, "<type>abac</type>") {
		return Credential{Type: "geni_abac", Version: "1", Value: xml}
	}
	return Credential{Type: "geni_sfa", Version: "3", Value: xml}
}

// MaxCredentialFile bounds a credential file (a delegated chain is a few tens of KiB).
const MaxCredentialFile = 4 << 20

// ReadCredentialFile reads a credential as omni saves it (JSON struct with
// geni_value) or as raw signed XML.
func ReadCredentialFile(name string) (Credential, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return Credential{}, err
	}
	if fi.Size() > MaxCredentialFile {
		return Credential{}, fmt.Errorf("%s: %d bytes is too large for a credential", name, fi.Size())
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return Credential{}, err
	}
	c, err := ParseCredential(b)
	if err != nil {
		return Credential{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// ParseCredential accepts omni's JSON struct or signed XML.
func ParseCredential(b []byte) (Credential, error) {
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "{") {
		var c Credential
		if err := json.Unmarshal([]byte(s), &c); err != nil {
			return Credential{}, fmt.Errorf("neither signed XML nor omni's JSON credential: %w", err)
		}
		if !strings.HasPrefix(strings.TrimSpace(c.Value), "<") {
			return Credential{}, errors.New("the JSON credential has no XML geni_value")
		}
		if c.Type == "" {
			c = WrapCredential(c.Value)
		}
		return c, nil
	}
	if !strings.HasPrefix(s, "<") {
		return Credential{}, errors.New("not a signed credential (want XML, or omni's JSON with geni_value)")
	}
	return WrapCredential(string(b)), nil
}

// MarshalOmni is the credential as omni -V3 -o writes it: Python's
// json.dumps of the struct (", " and ": " separators, no HTML escaping) and
// a newline.
func (c Credential) MarshalOmni() []byte {
	var b bytes.Buffer
	b.WriteString("{")
	for i, kv := range [][2]string{{"geni_type", c.Type}, {"geni_version", c.Version}, {"geni_value", c.Value}} {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(jsonString(kv[0]) + ": " + jsonString(kv[1]))
	}
	b.WriteString("}\n")
	return b.Bytes()
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// SaveCredential writes c as omni's _save_cred does: name plus ".json"
// (unless it already ends so), directories created. It returns the file name.
func SaveCredential(name string, c Credential) (string, error) {
	if !strings.HasSuffix(name, ".json") {
		name += ".json"
	}
	if err := writeFileMkdir(name, c.MarshalOmni()); err != nil {
		return "", err
	}
	return name, nil
}

var (
	targetPattern  = regexp.MustCompile(`<target_urn>\s*([^<\s]+)\s*</target_urn>`)
	ownerPattern   = regexp.MustCompile(`<owner_urn>\s*([^<\s]+)\s*</owner_urn>`)
	expiresPattern = regexp.MustCompile(`<expires>\s*([^<\s]+)\s*</expires>`)
)

// Target is the credential's (outermost) target URN, or "".
func (c Credential) Target() string { return firstMatch(targetPattern, c.Value) }

// Owner is the credential's owner URN, or "".
func (c Credential) Owner() string { return firstMatch(ownerPattern, c.Value) }

// Expires is the credential's (outermost) expiry, or the zero time.
func (c Credential) Expires() time.Time {
	s := firstMatch(expiresPattern, c.Value)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

func firstMatch(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}
