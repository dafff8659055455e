package am_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The layering test holds docs/architecture.md's package table ("The shape")
// to the code, the way am/config's test holds docs/configuration.md: every
// package of the module has a row, and a package imports (outside the
// standard library) only what its "depends on" cell names. `am` may be
// imported by every package but imports nothing of ours itself.

const module = "github.com/geniam/geniam"

// outside names the modules a "depends on" cell may name by their short name.
var outside = map[string][]string{
	"pgx":          {"github.com/jackc/pgx/v5"},
	"viper":        {"github.com/spf13/viper", "github.com/spf13/pflag", "go.yaml.in/yaml/v3"},
	"etree":        {"github.com/beevik/etree"},
	"pflag":        {"github.com/spf13/pflag"},
	"netlink":      {"github.com/vishvananda/netlink"},
	"netns":        {"github.com/vishvananda/netns"},
	"x/sys":        {"golang.org/x/sys"},
	"x/crypto/ssh": {"golang.org/x/crypto"},
}

// layerRule is one row of the table.
type layerRule struct {
	anything bool            // "everything": the mains wire all packages
	ours     map[string]bool // packages of the module it may import (besides am)
	outside  []string        // module paths outside it may import
}

// parseLayerTable reads the rows of the table under "## The shape".
func parseLayerTable(doc string) (map[string]layerRule, error) {
	rules := map[string]layerRule{}
	_, after, ok := strings.Cut(doc, "## The shape")
	if !ok {
		return nil, errorString("docs/architecture.md has no \"## The shape\" section")
	}
	tick := regexp.MustCompile("`([^`]+)`")
	sc := bufio.NewScanner(strings.NewReader(after))
	inTable := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") || strings.TrimSpace(cells[0]) == "package" {
			continue
		}
		deps := strings.TrimSpace(cells[len(cells)-1])
		r := layerRule{ours: map[string]bool{}, anything: strings.Contains(deps, "everything")}
		for _, m := range tick.FindAllStringSubmatch(deps, -1) {
			r.ours[m[1]] = true
		}
		for word, paths := range outside {
			if regexp.MustCompile(`\b` + word + `\b`).MatchString(tick.ReplaceAllString(deps, "")) {
				r.outside = append(r.outside, paths...)
			}
		}
		for _, m := range tick.FindAllStringSubmatch(cells[0], -1) {
			rules[m[1]] = r
		}
	}
	return rules, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// checkLayers returns one line per broken rule: a package without a row, or
// an import its row does not allow. imports maps each package of the module
// (relative path, "am" for the root) to its non-test imports.
func checkLayers(rules map[string]layerRule, imports map[string][]string) []string {
	var bad []string
	for pkg, imps := range imports {
		r, ok := rules[pkg]
		if !ok {
			bad = append(bad, pkg+": no row in docs/architecture.md's package table")
			continue
		}
		if r.anything {
			continue
		}
		for _, imp := range imps {
			switch {
			case imp == module+"/am" && pkg != "am":
				// the domain: everyone's vocabulary
			case strings.HasPrefix(imp, module+"/"):
				if rel := strings.TrimPrefix(imp, module+"/"); !r.ours[rel] {
					bad = append(bad, pkg+" imports "+rel+", which its row does not list")
				}
			case isStandard(imp):
			default:
				allowed := false
				for _, p := range r.outside {
					if imp == p || strings.HasPrefix(imp, p+"/") {
						allowed = true
					}
				}
				if !allowed {
					bad = append(bad, pkg+" imports "+imp+", which its row does not list")
				}
			}
		}
	}
	sort.Strings(bad)
	return bad
}

// isStandard: a standard-library import path has no dot in its first element.
func isStandard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func TestLayering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseLayerTable(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if not .Standard}}{{.ImportPath}} {{join .Imports " "}}{{end}}`, module+"/...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(string(bytes.TrimSpace(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || (fields[0] != module && !strings.HasPrefix(fields[0], module+"/")) {
			continue // a dependency outside the module
		}
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		if pkg == "" {
			continue
		}
		imports[pkg] = fields[1:]
	}
	if len(imports) < 10 {
		t.Fatalf("go list found only %d packages of the module: %v", len(imports), imports)
	}
	for _, b := range checkLayers(rules, imports) {
		t.Error(b)
	}
}

// TestLayeringCatchesABrokenRule: the check fails when a package imports
// what its row does not allow, or has no row (the issue asks to show it).
func TestLayeringCatchesABrokenRule(t *testing.T) {
	doc := "## The shape\n\n| package | owns | depends on |\n|---|---|---|\n" +
		"| `am` | the domain | nothing outside the standard library |\n" +
		"| `rspec` | XML | stdlib |\n" +
		"| `store` | PostgreSQL | pgx |\n" +
		"| `cmd/geni-am` | main | everything |\n\nprose\n"
	rules, err := parseLayerTable(doc)
	if err != nil {
		t.Fatal(err)
	}
	good := map[string][]string{
		"am":          {"context", "time"},
		"rspec":       {"encoding/xml", module + "/am"},
		"store":       {module + "/am", "github.com/jackc/pgx/v5/pgxpool"},
		"cmd/geni-am": {module + "/store", module + "/rspec", "github.com/spf13/viper"},
	}
	if bad := checkLayers(rules, good); len(bad) > 0 {
		t.Fatalf("a graph that keeps the rules: %v", bad)
	}
	broken := map[string][]string{
		"am":       {module + "/store"},                            // the domain imports an adapter
		"rspec":    {module + "/store", "github.com/jackc/pgx/v5"}, // one adapter imports another, and pgx
		"store":    {"github.com/beevik/etree"},                    // an outside module its row does not name
		"am/extra": {"fmt"},                                        // a package with no row
	}
	want := []string{
		"am imports store, which its row does not list",
		"am/extra: no row in docs/architecture.md's package table",
		"rspec imports github.com/jackc/pgx/v5, which its row does not list",
		"rspec imports store, which its row does not list",
		"store imports github.com/beevik/etree, which its row does not list",
	}
	if got := checkLayers(rules, broken); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("broken graph reported as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
