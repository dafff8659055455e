package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestDefaults(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8001" || c.Lifecycle.AllocationHold != 10*time.Minute || !c.TLS.LegacySHA1 || c.Limits.MaxBody != 4<<20 {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if c.Authority() != "geniam.localhost" || c.PublicURL() != "https://127.0.0.1:8001/" {
		t.Fatalf("authority %q url %q", c.Authority(), c.PublicURL())
	}
}

// An environment variable must work for a key the file does not mention (the
// viper pitfall noted in research/go-deps.md §4).
func TestEnvOnlyKeyAndPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "geniam.yaml")
	if err := WriteYAML(file, map[string]any{"listen": "127.0.0.1:9000", "lifecycle.allocation_hold": "5m", "tls.legacy_sha1": false}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GENIAM_DB_URL", "postgres://example/db")
	t.Setenv("GENIAM_LIFECYCLE_MAX_LEASE", "48h")
	t.Setenv("GENIAM_LISTEN", "127.0.0.1:9001")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--placement.policy=pack"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.URL != "postgres://example/db" || c.Lifecycle.MaxLease != 48*time.Hour {
		t.Errorf("env-only keys lost: db.url=%q max_lease=%v", c.DB.URL, c.Lifecycle.MaxLease)
	}
	if c.Listen != "127.0.0.1:9001" {
		t.Errorf("env should override file: listen=%q", c.Listen)
	}
	if c.Lifecycle.AllocationHold != 5*time.Minute || c.TLS.LegacySHA1 {
		t.Errorf("file values lost: hold=%v legacy=%v", c.Lifecycle.AllocationHold, c.TLS.LegacySHA1)
	}
	if c.Placement.Policy != "pack" {
		t.Errorf("flag lost: policy=%q", c.Placement.Policy)
	}
}

func TestValidate(t *testing.T) {
	for _, env := range [][2]string{
		{"GENIAM_AM_URN", "urn:publicid:IDN+x+user+bob"},
		{"GENIAM_PLACEMENT_POLICY", "random"},
		{"GENIAM_LOG_FORMAT", "xml"},
		{"GENIAM_LIMITS_MAX_BODY", "10"},
		{"GENIAM_CONSOLE_TOKEN", "short"},
		{"GENIAM_CONSOLE_POLL", "1ms"},
		{"GENIAM_OPERATORS", "urn:publicid:IDN+x+slice+s"},
		{"GENIAM_CONSOLE_OPERATORS", "carol"},
	} {
		t.Run(env[0], func(t *testing.T) {
			t.Setenv(env[0], env[1])
			if _, err := Load("", nil); err == nil || !strings.Contains(err.Error(), "config:") {
				t.Fatalf("%s=%s accepted (err %v)", env[0], env[1], err)
			}
		})
	}
	if _, err := Load("/nonexistent/geniam.yaml", nil); err == nil {
		t.Fatal("missing config file accepted")
	}
}

// The operators are one key; console.operators, its deprecated alias, still
// adds to it and is named for the warning at start.
func TestOperatorsAndAlias(t *testing.T) {
	const ops, old = "urn:publicid:IDN+x+user+ops", "urn:publicid:IDN+x+user+carol"
	t.Setenv("GENIAM_OPERATORS", ops)
	c, err := Load("", nil)
	if err != nil || strings.Join(c.OperatorURNs(), " ") != ops || len(c.Deprecated()) != 0 {
		t.Fatalf("operators: %v %v %v", c.OperatorURNs(), c.Deprecated(), err)
	}
	t.Setenv("GENIAM_CONSOLE_OPERATORS", old)
	c, err = Load("", nil)
	if err != nil || strings.Join(c.OperatorURNs(), " ") != ops+" "+old || len(c.Deprecated()) != 1 ||
		!strings.Contains(c.Deprecated()[0], "console.operators") {
		t.Fatalf("alias: %v %v %v", c.OperatorURNs(), c.Deprecated(), err)
	}
}

// docs/configuration.md is generated from the code; keep them in step.
func TestReferenceIsCurrent(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate: go run ./cmd/geni-am config-reference > docs/configuration.md)", err)
	}
	if string(got) != Reference() {
		t.Fatalf("docs/configuration.md is stale: run go run ./cmd/geni-am config-reference > docs/configuration.md")
	}
}

// RestartKeys names what a SIGHUP cannot apply, and only that.
func TestRestartKeys(t *testing.T) {
	started, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	next := *started
	if keys := RestartKeys(started, &next); len(keys) != 0 {
		t.Errorf("the same configuration: %v", keys)
	}
	next.Operations.Deny = "badlab.example"
	next.Operators = "urn:publicid:IDN+ch+user+op"
	next.Operations.AuditQueue++
	next.Lifecycle.MaxLease *= 2
	if keys := strings.Join(RestartKeys(started, &next), " "); keys != "lifecycle.max_lease operations.audit_queue" {
		t.Errorf("restart keys %q, want lifecycle.max_lease operations.audit_queue", keys)
	}
}
