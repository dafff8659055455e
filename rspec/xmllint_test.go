package rspec

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/amtest"
)

// The GENI v3 schemas and omni's sample files are reference data outside
// the repository, in a "shared" folder: $GENIAM_SHARED, or one next to the
// repository (or next to one of its parents, for worktrees).

// sharedPath returns where rel, a path inside the shared folder, is; "" when
// it is not there.
func sharedPath(t testing.TB, rel string) string {
	t.Helper()
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if dir := os.Getenv("GENIAM_SHARED"); dir != "" {
		if p := filepath.Join(dir, rel); exists(p) {
			return p
		}
		return ""
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for dir := filepath.Dir(root); ; dir = filepath.Dir(dir) {
		if p := filepath.Join(dir, "shared", rel); exists(p) {
			return p
		}
		if dir == filepath.Dir(dir) {
			return ""
		}
	}
}

func sharedSchemas(t testing.TB) string {
	t.Helper()
	p := sharedPath(t, filepath.Join("schemas", "geni-rspec-3"))
	if p == "" {
		t.Skipf("GENI v3 schemas not found in $GENIAM_SHARED or a shared folder next to the repository: skipping schema validation")
	}
	return p
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

// unmarshalDoc decodes doc, a document of ours (what names it in the
// failure), into a T, or fails the test showing the document.
func unmarshalDoc[T any](t testing.TB, what, doc string) T {
	t.Helper()
	var v T
	if err := xml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("%s does not parse: %v\n%s", what, err, excerpt(doc))
	}
	return v
}

func TestExtensionSchemaIsWellFormed(t *testing.T) {
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Skip("xmllint not installed")
	}
	out, err := exec.Command("xmllint", "--noout", "--nonet", filepath.Join("..", "schemas", "geniam-rspec-ext-1.xsd")).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(amtest.ReadFile(t, filepath.Join("..", "schemas", "geniam-rspec-ext-1.xsd"))), am.GeniamNamespace) {
		t.Fatalf("extension schema does not target %s", am.GeniamNamespace)
	}
}
