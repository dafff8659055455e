package agent

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
)

func TestValidID(t *testing.T) {
	for _, ok := range []string{"a", "A1", "sliver-1.2_x", strings.Repeat("z", 128)} {
		if ValidID(ok) != nil {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "a;b", "a b", "-a", "_a", ".a", strings.Repeat("z", 129), "a\x00", "é", "a\n"} {
		if am.CodeOf(ValidID(bad)) != am.BadArgs {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestStartRequestValidate(t *testing.T) {
	cases := []struct {
		name string
		req  StartRequest
		ok   bool
	}{
		{"empty", StartRequest{}, true},
		{"argv", StartRequest{Command: []string{"/prog", "a b", ";rm"}}, true},
		{"shell", StartRequest{Shell: "echo $HOME; ls"}, true},
		{"both", StartRequest{Command: []string{"x"}, Shell: "y"}, false},
		{"empty argv0", StartRequest{Command: []string{""}}, false},
		{"nul", StartRequest{Command: []string{"a\x00b"}}, false},
		{"env", StartRequest{Env: []string{"A=1"}}, true},
		{"env no =", StartRequest{Env: []string{"A"}}, false},
		{"restart", StartRequest{Restart: "on-failure", MaxRetries: 3}, true},
		{"retries without on-failure", StartRequest{MaxRetries: 3}, false},
		{"bad restart", StartRequest{Restart: "unless-stopped"}, false},
		{"negative time", StartRequest{TimeLimitSeconds: -1}, false},
		{"urn newline", StartRequest{SliceURN: "urn:a\nb"}, false},
		{"key newline", StartRequest{Users: []User{{URN: "u", Keys: []string{"k1\nk2"}}}}, false},
	}
	for _, c := range cases {
		err := c.req.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func FuzzStartRequest(f *testing.F) {
	f.Add([]byte(`{"slice_urn":"urn:publicid:IDN+x+slice+s","command":["/prog","-exit","3"],"restart":"on-failure","max_retries":2,"time_limit_seconds":60,"users":[{"urn":"u","keys":["ssh-ed25519 AAA"]}]}`))
	f.Add([]byte(`{"shell":"echo hi","env":["A=1"],"network":"none","memory_bytes":1048576,"cpus":0.5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r StartRequest
		if json.Unmarshal(b, &r) != nil {
			return
		}
		if r.Validate() != nil {
			return
		}
		if len(r.Command) > 0 && r.Shell != "" {
			t.Fatal("both command and shell accepted")
		}
		for _, u := range r.Users {
			for _, k := range u.Keys {
				if strings.ContainsAny(k, "\r\n") {
					t.Fatal("key with a line break accepted")
				}
			}
		}
	})
}

// An aggregate sees its own slivers and those started without an
// instance, never another aggregate's.
func TestOfAggregate(t *testing.T) {
	sts := []Status{{ID: "a", Aggregate: "am-1"}, {ID: "b", Aggregate: "am-2"}, {ID: "c"}}
	ids := func(sts []Status) (s string) {
		for _, st := range sts {
			s += st.ID
		}
		return s
	}
	for inst, want := range map[string]string{"am-1": "ac", "am-2": "bc", "am-3": "c", "": "abc"} {
		if got := ids(OfAggregate(sts, inst)); got != want {
			t.Errorf("instance %q sees %q, want %q", inst, got, want)
		}
	}
}
