package rspec

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
)

// The GENI v3 schemas are reference data outside the repository: tests look
// for them in $GENIAM_SHARED/schemas or in a "shared/schemas" folder next to
// the repository (or next to one of its parents, for worktrees).

func sharedSchemas(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("GENIAM_SHARED"); dir != "" {
		p := filepath.Join(dir, "schemas", "geni-rspec-3")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		t.Skipf("GENIAM_SHARED=%s has no schemas/geni-rspec-3: skipping schema validation", dir)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for dir := filepath.Dir(root); ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "shared", "schemas", "geni-rspec-3")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	t.Skipf("GENI v3 schemas not found (set GENIAM_SHARED or provide ../shared/schemas next to the repository): skipping schema validation")
	return ""
}

// validator validates documents with xmllint against a wrapper schema that
// imports the GENI v3 schema of one RSpec type plus our extension schema.
// --nonet keeps xmllint from fetching the remote schemaLocations.
type validator struct {
	dir      string
	wrappers map[string]string // "ad", "request", "manifest" -> wrapper path
}

func newValidator(t testing.TB) *validator {
	t.Helper()
	geni := sharedSchemas(t)
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Skip("xmllint not installed: skipping schema validation")
	}
	ours, err := filepath.Abs(filepath.Join("..", "schemas", "geniam-rspec-ext-1.xsd"))
	if err != nil {
		t.Fatal(err)
	}
	v := &validator{dir: t.TempDir(), wrappers: map[string]string{}}
	for _, kind := range []string{"ad", "request", "manifest"} {
		wrapper := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:import namespace=%q schemaLocation=%q/>
  <xs:import namespace=%q schemaLocation=%q/>
</xs:schema>
`, am.RSpecNamespace, filepath.Join(geni, kind+".xsd"), am.GeniamNamespace, ours)
		p := filepath.Join(v.dir, kind+"-wrapper.xsd")
		if err := os.WriteFile(p, []byte(wrapper), 0o644); err != nil {
			t.Fatal(err)
		}
		v.wrappers[kind] = p
	}
	return v
}

// check runs xmllint and returns its complaint, if any.
func (v *validator) check(kind, doc string) error {
	f, err := os.CreateTemp(v.dir, kind+"-*.xml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(doc); err != nil {
		return err
	}
	f.Close()
	out, err := exec.Command("xmllint", "--noout", "--nonet", "--schema", v.wrappers[kind], f.Name()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("xmllint (%s schema): %v\n%s", kind, err, out)
	}
	return nil
}

func (v *validator) validate(t testing.TB, kind, doc string) {
	t.Helper()
	if err := v.check(kind, doc); err != nil {
		t.Fatalf("%v\ndocument:\n%s", err, excerpt(doc))
	}
}

func excerpt(doc string) string {
	if len(doc) > 6000 {
		return doc[:6000] + "\n..."
	}
	return doc
}

func TestExtensionSchemaIsWellFormed(t *testing.T) {
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Skip("xmllint not installed")
	}
	out, err := exec.Command("xmllint", "--noout", "--nonet", filepath.Join("..", "schemas", "geniam-rspec-ext-1.xsd")).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(mustRead(t, filepath.Join("..", "schemas", "geniam-rspec-ext-1.xsd"))), am.GeniamNamespace) {
		t.Fatalf("extension schema does not target %s", am.GeniamNamespace)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
