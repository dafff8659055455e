package devch

import (
	"crypto/tls"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/credentials/devpki"
)

// rpc posts an XML-RPC call with string parameters as the TLS client id.
func rpc(t *testing.T, srv *httptest.Server, id *devpki.Identity, method string, params ...string) string {
	t.Helper()
	client := srv.Client()
	tr := client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key}}
	client = &http.Client{Transport: tr}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0"?><methodCall><methodName>` + method + `</methodName><params>`)
	for _, p := range params {
		b.WriteString(`<param><value><string>`)
		xml.EscapeText(&b, []byte(p))
		b.WriteString(`</string></value></param>`)
	}
	b.WriteString(`</params></methodCall>`)
	resp, err := client.Post(srv.URL, "text/xml", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return string(out)
}

// stringResult extracts the single string of a response (unescaped).
func stringResult(t *testing.T, resp string) string {
	t.Helper()
	var r struct {
		S string `xml:"params>param>value>string"`
	}
	if err := xml.Unmarshal([]byte(resp), &r); err != nil || r.S == "" {
		t.Fatalf("no string result in %.300s", resp)
	}
	return r.S
}

func TestHandlerOverTLS(t *testing.T) {
	ch := newTestCH(t, "ch.geniam.test")
	alice := issueUser(t, ch, "alice", "")
	h := &Handler{CH: ch, Aggregates: []Aggregate{{URN: "urn:publicid:IDN+am.geniam.test+authority+am", URL: "https://127.0.0.1:8001/"}}}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	v := credentials.NewVerifier(ch.Roots(), credentials.Options{})
	caller := &am.Caller{URN: credentials.URNOf(alice.Cert), Cert: alice.Cert, Chain: chain(alice)}

	if r := rpc(t, srv, alice, "GetVersion"); !strings.Contains(r, "gcf-ch_api") {
		t.Fatalf("GetVersion: %s", r)
	}
	uc := stringResult(t, rpc(t, srv, alice, "CreateUserCredential", string(alice.CertPEM())))
	if _, err := v.Authorize(am.AuthRequest{Method: "ListResources", Caller: caller,
		Credentials: []am.Credential{{Type: "geni_sfa", Version: "3", Value: uc}}}); err != nil {
		t.Fatal(err)
	}
	slice := "urn:publicid:IDN+ch.geniam.test+slice+demo"
	sc := stringResult(t, rpc(t, srv, alice, "CreateSlice", slice))
	if _, err := v.Authorize(am.AuthRequest{Method: "Allocate", Caller: caller, Target: slice, Privileges: credentials.PrivilegesFor("Allocate"),
		Credentials: []am.Credential{{Type: "geni_sfa", Version: "3", Value: sc}}}); err != nil {
		t.Fatal(err)
	}
	if r := rpc(t, srv, alice, "ListMySlices", caller.URN); !strings.Contains(r, slice) {
		t.Fatalf("ListMySlices: %s", r)
	}
	if r := rpc(t, srv, alice, "RenewSlice", slice, "2099-01-01T00:00:00"); !strings.Contains(r, "<fault>") || !strings.Contains(r, "<int>19</int>") {
		t.Fatalf("RenewSlice too far: %s", r)
	}
	if r := rpc(t, srv, alice, "ListAggregates"); !strings.Contains(r, "https://127.0.0.1:8001/") {
		t.Fatalf("ListAggregates: %s", r)
	}
	if r := rpc(t, srv, alice, "DeleteSlice", slice); !strings.Contains(r, "<boolean>1</boolean>") {
		t.Fatalf("DeleteSlice: %s", r)
	}
	if r := rpc(t, srv, alice, "CreateSlice", "urn:publicid:IDN+elsewhere+slice+x"); !strings.Contains(r, "another authority") {
		t.Fatalf("foreign slice: %s", r)
	}
	if r := rpc(t, srv, alice, "Nope"); !strings.Contains(r, "unknown method") {
		t.Fatalf("unknown method: %s", r)
	}
}

// FuzzHandlerCall feeds arbitrary request bodies to the XML-RPC decoding.
func FuzzHandlerCall(f *testing.F) {
	f.Add([]byte(`<?xml version="1.0"?><methodCall><methodName>CreateSlice</methodName><params><param><value><string>urn:publicid:IDN+x+slice+y</string></value></param></params></methodCall>`))
	f.Add([]byte(`<methodCall><methodName>RenewSlice</methodName><params><param><value>a</value></param><param><value><dateTime.iso8601>20260101T00:00:00</dateTime.iso8601></value></param></params></methodCall>`))
	f.Add([]byte(`<methodCall><methodName>GetVersion</methodName></methodCall>`))
	h := &Handler{CH: newTestCH(f, "ch.geniam.test")}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = h.call(body, nil)
	})
}
