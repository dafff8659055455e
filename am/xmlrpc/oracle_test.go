package xmlrpc

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/amtest"
	kolo "github.com/kolo/xmlrpc"
)

// TestKoloClient checks our codec against kolo/xmlrpc, the Go client the
// end-to-end tests use: calls kolo encodes decode here, and responses we
// encode decode in kolo (within its known client-side limits: it turns "" into
// nil, so the values here avoid empty strings).
func TestKoloClient(t *testing.T) {
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	params := []any{
		"urn:publicid:IDN+example+slice+s1",
		[]any{map[string]any{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "<signed-credential/>"}},
		"<rspec>\r\n  <node client_id=\"a&b\"/>\n</rspec>",
		map[string]any{"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}, "geni_compressed": true, "n": 7, "t": when},
	}
	body, err := kolo.EncodeMethodCall("Allocate", params...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCall(bytes.NewReader(body), Limits{})
	if err != nil {
		t.Fatalf("decoding kolo's call: %v\n%s", err, body)
	}
	want := []any{params[0], params[1], params[2], map[string]any{
		"geni_rspec_version": map[string]any{"type": "GENI", "version": "3"}, "geni_compressed": true, "n": int64(7), "t": when}}
	if c.Method != "Allocate" || !equalValues(c.Params, want) {
		t.Errorf("kolo call decoded as %#v", c)
	}

	var buf bytes.Buffer
	resp := map[string]any{
		"code":   map[string]any{"geni_code": 0, "am_type": "geniam"},
		"value":  []any{map[string]any{"geni_sliver_urn": "urn:x<&>", "geni_expires": "2026-01-01T00:00:00Z", "n": int64(1) << 40}},
		"output": "ok",
		"when":   when,
	}
	if err := EncodeResponse(&buf, resp); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := kolo.Response(buf.Bytes()).Unmarshal(&got); err != nil {
		t.Fatalf("kolo cannot read our response: %v\n%s", err, buf.Bytes())
	}
	v := got["value"].([]any)[0].(map[string]any)
	if v["geni_sliver_urn"] != "urn:x<&>" || v["n"] != int64(1)<<40 || got["output"] != "ok" ||
		got["code"].(map[string]any)["geni_code"] != int64(0) || !got["when"].(time.Time).Equal(when) {
		t.Errorf("kolo read %#v", got)
	}

	buf.Reset()
	if err := EncodeFault(&buf, 3, "no <way>"); err != nil {
		t.Fatal(err)
	}
	ferr := kolo.Response(buf.Bytes()).Err()
	if f, ok := ferr.(kolo.FaultError); !ok || f.Code != 3 || f.String != "no <way>" {
		t.Errorf("kolo read our fault as %#v", ferr)
	}
}

// pythonOracle generates calls with Python's xmlrpc.client (gen), and checks
// that Python reads each response we encode back as the params it sent (check).
const pythonOracle = `
import sys, os, datetime
import xmlrpc.client as x

cases = {
  "getversion": ("GetVersion", ()),
  "getversion_opts": ("GetVersion", ({},)),
  "listresources": ("ListResources", (
      [{"geni_type": "geni_sfa", "geni_version": "3", "geni_value": "<signed-credential>\n <x a='1'/></signed-credential>"}],
      {"geni_rspec_version": {"type": "GENI", "version": "3"}, "geni_compressed": True, "geni_available": False, "x": None})),
  "allocate": ("Allocate", ("urn:publicid:IDN+ex+slice+s", [], "<rspec>\r\n <node client_id=\"n&amp;1\"/>\r\n</rspec>", {"geni_end_time": "2026-01-01T00:00:00Z"})),
  "mixed": ("Mixed", (x.Binary(b"\x00\x01binary\xff"), datetime.datetime(2026, 1, 2, 3, 4, 5),
      [[1, [2, [3]]], {"": "empty key", "a<b&c": "odd key", "uni": "\u65e5\u672c \u2603"}],
      -2147483648, 2.5, "", "  spaces  ", True, {"nested": {"deep": [None, False, 0]}})),
}

def load(path):
    with open(path, "rb") as f:
        return x.loads(f.read(), use_builtin_types=True)

mode, d = sys.argv[1], sys.argv[2]
if mode == "gen":
    for name, (method, params) in cases.items():
        body = x.dumps(params, method, allow_none=True)
        with open(os.path.join(d, name + ".call.xml"), "w") as f:
            f.write(body)
else:
    bad = 0
    for name, (method, params) in cases.items():
        sent = x.loads(x.dumps(params, allow_none=True), use_builtin_types=True)[0]
        got, _ = load(os.path.join(d, name + ".resp.xml"))
        if list(got[0]) != list(sent):
            print(name, "DIFFERS:", repr(got[0]), "!=", repr(sent))
            bad += 1
    try:
        load(os.path.join(d, "fault.xml"))
        print("fault not raised"); bad += 1
    except x.Fault as f:
        if f.faultCode != 2 or f.faultString != 'bad <args> & "stuff"':
            print("fault:", f.faultCode, f.faultString); bad += 1
    big, _ = load(os.path.join(d, "big.xml"))
    if big[0] != [2**40, -2**62, 7]:
        print("big ints:", big[0]); bad += 1
    print("BAD" if bad else "EQUAL")
`

// TestPythonOracle round-trips values through our codec with Python's
// standard xmlrpc.client on both ends.
func TestPythonOracle(t *testing.T) {
	oracle := amtest.Python(t, pythonOracle)
	dir := t.TempDir()
	if out, err := oracle("gen", dir); err != nil {
		t.Fatalf("python gen: %v\n%s", err, out)
	}
	calls, _ := filepath.Glob(filepath.Join(dir, "*.call.xml"))
	if len(calls) != 5 {
		t.Fatalf("python wrote %d calls", len(calls))
	}
	for _, path := range calls {
		body, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		c, err := DecodeCall(bytes.NewReader(body), Limits{})
		if err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(path), err, body)
		}
		// The response carries the params as one array: Python compares it
		// with the tuple it sent.
		var buf bytes.Buffer
		if err := EncodeResponse(&buf, c.Params); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(strings.TrimSuffix(path, ".call.xml")+".resp.xml", buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		switch filepath.Base(path) {
		case "allocate.call.xml":
			// Python writes CR LF raw, and XML reads a raw CR LF as LF.
			if c.Params[2] != "<rspec>\n <node client_id=\"n&amp;1\"/>\n</rspec>" {
				t.Errorf("RSpec decoded as %q", c.Params[2])
			}
		case "mixed.call.xml":
			if string(c.Params[0].([]byte)) != "\x00\x01binary\xff" || c.Params[6] != "  spaces  " || c.Params[5] != "" {
				t.Errorf("mixed decoded as %#v", c.Params)
			}
		}
	}
	var fault bytes.Buffer
	if err := EncodeFault(&fault, 2, `bad <args> & "stuff"`); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fault.xml"), fault.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var big bytes.Buffer
	if err := EncodeResponse(&big, []int64{1 << 40, -1 << 62, 7}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.xml"), big.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := oracle("check", dir)
	if err != nil || strings.TrimSpace(string(out)) != "EQUAL" {
		t.Fatalf("python check: %v\n%s", err, out)
	}
}
