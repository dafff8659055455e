package main

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/xmlrpc"
)

// replayVars fill the placeholders of a capture (captures/README.md).
type replayVars struct {
	creds     map[string][]byte // "user", "slice", "slice2", …: credential documents
	sliceURNs map[string]string // "SLICE_URN", "SLICE2_URN", …
	sliverID  string            // last name part of the sliver the last Allocate made
	base      time.Time         // what {{TIME+Ns}} counts from
}

func sliceKey(prefix string, i int) string {
	if i == 0 {
		return prefix
	}
	return prefix + strconv.Itoa(i+1)
}

var (
	placeholderRE = regexp.MustCompile(`\{\{([^{}]*)\}\}`)
	timeRE        = regexp.MustCompile(`^TIME([+-]\d+)s$`)
	// Python's xmlrpc.client escapes exactly these in <string>.
	xmlrpcEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
)

// render fills a capture's placeholders; the rest of the bytes are omni's.
func (v *replayVars) render(t *testing.T, tmpl []byte) []byte {
	t.Helper()
	var failed string
	out := placeholderRE.ReplaceAllFunc(tmpl, func(m []byte) []byte {
		p := string(m[2 : len(m)-2])
		switch {
		case strings.HasPrefix(p, "CRED "):
			kind, mutation, _ := strings.Cut(strings.TrimPrefix(p, "CRED "), "|")
			cred, ok := v.creds[kind]
			if !ok {
				failed = p
				return m
			}
			return []byte(xmlrpcEscaper.Replace(mutateCredential(string(cred), mutation)))
		case p == "SLIVER_ID":
			if v.sliverID == "" {
				failed = p + " (no Allocate before)"
			}
			return []byte(v.sliverID)
		case timeRE.MatchString(p):
			secs, _ := strconv.Atoi(timeRE.FindStringSubmatch(p)[1])
			return []byte(v.base.Add(time.Duration(secs) * time.Second).UTC().Format("2006-01-02T15:04:05"))
		default:
			if urn, ok := v.sliceURNs[p]; ok {
				return []byte(urn)
			}
			failed = p
			return m
		}
	})
	if failed != "" {
		t.Fatalf("capture placeholder {{%s}} has no value", failed)
	}
	return out
}

// mutateCredential applies what the acceptance tests do to a good user
// credential in test_ListResources_badCredential_*.
func mutateCredential(cred, mutation string) string {
	cred = strings.TrimRight(cred, " \t\r\n")
	switch mutation {
	case "dropfirst": // removeFirstChar: "?xml version=…", not XML any more
		return cred[1:]
	case "foo":
		return alterSignedObject(cred)
	}
	return cred
}

var dsigTagRE = regexp.MustCompile(`<(/?)([A-Z][A-Za-z0-9]*)`)

// alterSignedObject is what test_ListResources_badCredential_alteredObject
// sends: Python's xml.etree parses the credential, inserts <foo/> as the
// root's first child and serializes it again. The insertion itself leaves
// the signed <credential> intact; the re-serialization does not: etree drops
// the prolog, writes "<x />" and moves the XML-DSig namespace to an ns1
// prefix declared on the root, which inclusive C14N of the signed element
// then includes, so its digest no longer matches.
func alterSignedObject(cred string) string {
	const dsig = "http://www.w3.org/2000/09/xmldsig#"
	if strings.HasPrefix(cred, "<?xml") {
		cred = strings.TrimLeft(cred[strings.Index(cred, "?>")+2:], " \t\r\n")
	}
	if i, j := strings.Index(cred, "<signatures>"), strings.LastIndex(cred, "</signatures>"); i >= 0 && j > i {
		sigs := strings.ReplaceAll(cred[i:j], ` xmlns="`+dsig+`"`, "")
		cred = cred[:i] + dsigTagRE.ReplaceAllString(sigs, "<${1}ns1:${2}") + cred[j:]
	}
	cred = strings.ReplaceAll(cred, "/>", " />")
	cred = strings.Replace(cred, "<signed-credential", `<signed-credential xmlns:ns1="`+dsig+`"`, 1)
	i := strings.Index(cred, ">") + 1
	return cred[:i] + "<foo />" + cred[i:]
}

// replayScenario sends every request of a capture directory in order and
// checks each answer against the captured one (geni_code and the shape of
// the value) and against what the acceptance tests assert.
func replayScenario(t *testing.T, agg *servedAggregate, dir string, v *replayVars) {
	t.Helper()
	reqs, err := filepath.Glob(filepath.Join(dir, "*.req.xml"))
	if err != nil || len(reqs) == 0 {
		t.Fatalf("no captures in %s (%v)", dir, err)
	}
	sort.Strings(reqs)
	for _, reqFile := range reqs {
		step := strings.TrimSuffix(filepath.Base(reqFile), ".req.xml")
		tmpl, err := os.ReadFile(reqFile)
		if err != nil {
			t.Fatal(err)
		}
		wantBody, err := os.ReadFile(strings.TrimSuffix(reqFile, ".req.xml") + ".resp.xml")
		if err != nil {
			t.Fatal(err)
		}
		body := v.render(t, tmpl)
		call, err := xmlrpc.DecodeCall(bytes.NewReader(body), xmlrpc.Limits{})
		if err != nil {
			t.Fatalf("%s: the rendered capture does not decode: %v", step, err)
		}
		want := decodeResult(t, wantBody)
		got := decodeResult(t, agg.post(t, body))
		wantCode, gotCode := geniCode(t, want), geniCode(t, got)
		if gotCode != wantCode {
			t.Errorf("%s: geni_code %d, captured %d; output %q", step, gotCode, wantCode, got["output"])
			continue
		}
		if ws, gs := shape(want["value"]), shape(got["value"]); ws != gs {
			t.Errorf("%s: value shape\n got %s\nwant %s", step, gs, ws)
		}
		checkAcceptance(t, step, call, gotCode, got)
		if call.Method == "Allocate" && gotCode == 0 {
			slivers := got["value"].(map[string]any)["geni_slivers"].([]any)
			urn := slivers[0].(map[string]any)["geni_sliver_urn"].(string)
			v.sliverID = urn[strings.LastIndex(urn, "+")+1:]
		}
	}
}

// decodeResult decodes an AM API v3 answer: a struct, never a fault (the
// acceptance tests count a fault as a failure even where an error is due).
func decodeResult(t *testing.T, body []byte) map[string]any {
	t.Helper()
	v, err := xmlrpc.DecodeResponse(bytes.NewReader(body), xmlrpc.Limits{})
	if err != nil {
		t.Fatalf("response: %v\n%s", err, body)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("response is %T, want a struct", v)
	}
	return m
}

// geniCode checks the envelope the acceptance tests check on every call
// (code struct with an int geni_code; output a string when it is not 0) and
// returns the code.
func geniCode(t *testing.T, r map[string]any) int {
	t.Helper()
	code, ok := r["code"].(map[string]any)
	if !ok {
		t.Fatalf("no code struct in %v", r)
	}
	n, ok := code["geni_code"].(int64)
	if !ok {
		t.Fatalf("geni_code is %T, want int", code["geni_code"])
	}
	if _, ok := r["value"]; !ok {
		t.Fatalf("no value in %v", r)
	}
	if out, ok := r["output"]; n != 0 || ok {
		if _, isString := out.(string); !isString {
			t.Fatalf("output is %T, want a string", out)
		}
	}
	return int(n)
}

// shape describes a decoded value's structure without its data: struct keys
// and value types, array element shapes.
func shape(v any) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ":" + shape(x[k])
		}
		return "{" + strings.Join(parts, ",") + "}"
	case []any:
		seen := map[string]bool{}
		var parts []string
		for _, e := range x {
			if s := shape(e); !seen[s] {
				seen[s] = true
				parts = append(parts, s)
			}
		}
		sort.Strings(parts)
		return "[" + strings.Join(parts, "|") + "]"
	case nil:
		return "nil"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// checkAcceptance asserts, for a call that succeeded, what am_api_accept.py
// (and omni_unittest.py) check of its answer.
func checkAcceptance(t *testing.T, step string, call *xmlrpc.Call, code int, r map[string]any) {
	t.Helper()
	fail := func(format string, args ...any) { t.Errorf("%s: "+format, append([]any{step}, args...)...) }
	if code != 0 {
		return
	}
	value := r["value"]
	switch call.Method {
	case "GetVersion":
		checkGetVersion(t, step, value)
	case "ListResources":
		rspec, ok := value.(string)
		if !ok {
			fail("value is %T, want string", value)
			return
		}
		if option(call, 1, "geni_compressed") == true {
			rspec = inflate(t, step, rspec)
		}
		if root, _ := rspecRoot(rspec); root.typ != "advertisement" {
			fail("not an advertisement RSpec: %.200s", rspec)
		}
	case "Allocate", "Provision", "Describe":
		m := structOf(t, step, value)
		rspec, _ := m["geni_rspec"].(string)
		if call.Method == "Describe" && option(call, 2, "geni_compressed") == true {
			rspec = inflate(t, step, rspec)
		}
		root, err := rspecRoot(rspec)
		if err != nil || root.typ != "manifest" {
			fail("geni_rspec is not a manifest (%v): %.200s", err, rspec)
		}
		slivers := sliversOf(t, step, m["geni_slivers"], call.Method)
		if call.Method == "Describe" {
			if _, ok := m["geni_urn"].(string); !ok {
				fail("geni_urn is %T", m["geni_urn"])
			}
			// Describe of a slice with nothing here: an empty manifest, whose
			// root has no child (rspec_util.has_child, --more-strict).
			if len(slivers) == 0 && root.children != 0 {
				fail("manifest of an empty slice has %d children", root.children)
			}
		}
		if call.Method == "Provision" {
			for _, key := range sshKeysOf(option(call, 2, "geni_users")) {
				if !strings.Contains(rspec, key) {
					fail("geni_users key %.40s… is not in the manifest", key)
				}
			}
		}
	case "Status":
		m := structOf(t, step, value)
		if _, ok := m["geni_urn"].(string); !ok {
			fail("geni_urn is %T", m["geni_urn"])
		}
		sliversOf(t, step, m["geni_slivers"], call.Method)
	case "Renew", "PerformOperationalAction", "Delete":
		sliversOf(t, step, value, call.Method)
	case "Shutdown":
		if value != true {
			fail("Shutdown value %v, want true", value)
		}
	}
}

// checkGetVersion: test_GetVersion, both modes.
func checkGetVersion(t *testing.T, step string, value any) {
	fail := func(format string, args ...any) { t.Errorf("%s: "+format, append([]any{step}, args...)...) }
	m := structOf(t, step, value)
	if m["geni_api"] != int64(3) {
		fail("geni_api %v (%T), want int 3", m["geni_api"], m["geni_api"])
	}
	if versions, ok := m["geni_api_versions"].(map[string]any); !ok {
		fail("geni_api_versions is %T", m["geni_api_versions"])
	} else if _, ok := versions["3"].(string); !ok {
		fail("geni_api_versions has no URL for 3: %v", versions)
	}
	for _, key := range []string{"geni_request_rspec_versions", "geni_ad_rspec_versions"} {
		list, ok := m[key].([]any)
		if !ok || len(list) == 0 {
			fail("%s is %T %v", key, m[key], m[key])
			continue
		}
		for _, e := range list {
			rv := structOf(t, step, e)
			for _, k := range []string{"type", "version", "schema", "namespace"} {
				if _, ok := rv[k].(string); !ok {
					fail("%s entry: %s is %T", key, k, rv[k])
				}
			}
			if _, ok := rv["extensions"].([]any); !ok {
				fail("%s entry: extensions is %T", key, rv["extensions"])
			}
		}
	}
	if creds, ok := m["geni_credential_types"].([]any); !ok || len(creds) == 0 {
		fail("geni_credential_types is %T %v", m["geni_credential_types"], m["geni_credential_types"])
	}
	// assertGeniSingleAllocationIfExists requires the key despite its name,
	// and a Python int: an XML-RPC <boolean> fails it.
	if n, ok := m["geni_single_allocation"].(int64); !ok || (n != 0 && n != 1) {
		fail("geni_single_allocation %v (%T), want int 0 or 1", m["geni_single_allocation"], m["geni_single_allocation"])
	}
	switch m["geni_allocate"] {
	case "geni_single", "geni_disjoint", "geni_many":
	default:
		fail("geni_allocate %v", m["geni_allocate"])
	}
}

func structOf(t *testing.T, step string, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: value is %T, want a struct", step, v)
	}
	return m
}

// sliversOf checks a geni_slivers list: every entry names a sliver, its
// allocation state and expiry; operational state where the method has it.
func sliversOf(t *testing.T, step string, v any, method string) []any {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("%s: slivers are %T, want an array", step, v)
	}
	for _, e := range list {
		s := structOf(t, step, e)
		for _, k := range []string{"geni_sliver_urn", "geni_allocation_status", "geni_expires"} {
			if _, ok := s[k].(string); !ok {
				t.Errorf("%s: sliver %s is %T", step, k, s[k])
			}
		}
		if method != "Allocate" && method != "Delete" && s["geni_allocation_status"] != "geni_allocated" {
			if _, ok := s["geni_operational_status"].(string); !ok {
				t.Errorf("%s: sliver geni_operational_status is %T", step, s["geni_operational_status"])
			}
		}
		want := map[string]string{"Allocate": "geni_allocated", "Provision": "geni_provisioned", "Delete": "geni_unallocated"}[method]
		if want != "" && s["geni_allocation_status"] != want {
			t.Errorf("%s: %s left a sliver %v", step, method, s["geni_allocation_status"])
		}
	}
	return list
}

// option returns options[name] of the call's struct parameter at index i.
func option(call *xmlrpc.Call, i int, name string) any {
	if i >= len(call.Params) {
		return nil
	}
	if m, ok := call.Params[i].(map[string]any); ok {
		return m[name]
	}
	return nil
}

func sshKeysOf(users any) []string {
	var keys []string
	list, _ := users.([]any)
	for _, u := range list {
		m, _ := u.(map[string]any)
		ks, _ := m["keys"].([]any)
		for _, k := range ks {
			if s, ok := k.(string); ok {
				keys = append(keys, s)
			}
		}
	}
	return keys
}

// inflate undoes geni_compressed: base64 of zlib.
func inflate(t *testing.T, step, s string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("%s: geni_compressed value is not base64: %v", step, err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: geni_compressed value is not zlib: %v", step, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: geni_compressed value: %v", step, err)
	}
	return string(b)
}

type rspecInfo struct {
	typ      string
	children int // element children of the root
}

// rspecRoot reads the root <rspec> of a document: its type and how many
// element children it has.
func rspecRoot(doc string) (rspecInfo, error) {
	d := xml.NewDecoder(strings.NewReader(doc))
	var info rspecInfo
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			if depth != 0 || info.typ == "" {
				return info, fmt.Errorf("no complete rspec element")
			}
			return info, nil
		}
		if err != nil {
			return info, err
		}
		switch e := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 {
				if e.Name.Local != "rspec" {
					return info, fmt.Errorf("root is <%s>", e.Name.Local)
				}
				for _, a := range e.Attr {
					if a.Name.Local == "type" {
						info.typ = a.Value
					}
				}
			} else if depth == 2 {
				info.children++
			}
		case xml.EndElement:
			depth--
		}
	}
}
