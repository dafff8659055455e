package provision_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strings"
	"testing"

	"github.com/geniam/geniam/am"
)

// TestEveryJobKindHasAWorker holds the worker's dispatch (Provisioner.do in
// jobs.go) to am.JobKinds, the one table of job kinds: the fourth place the
// action list lived (issue 15), next to the trigger's CASE and the CHECK,
// which store/rules_test.go holds.
func TestEveryJobKindHasAWorker(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "jobs.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var handled []string
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "do" {
			return true
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			// `j.Kind == store.JobX` and `case store.JobX:` both name a kind.
			if sel, ok := n.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "Job") {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "store" {
					handled = append(handled, sel.Sel.Name)
				}
			}
			return true
		})
		return false
	})
	name := map[am.JobKind]string{am.JobProvision: "JobProvision", am.JobStart: "JobStart", am.JobStop: "JobStop",
		am.JobRestart: "JobRestart", am.JobUpdateUsers: "JobUpdateUsers", am.JobFetchData: "JobFetchData", am.JobDelete: "JobDelete"}
	for _, k := range am.JobKinds {
		n, ok := name[k]
		if !ok {
			t.Errorf("job kind %q is new: name its store constant here and give it a case in Provisioner.do", k)
			continue
		}
		if !slices.Contains(handled, n) {
			t.Errorf("Provisioner.do has no case for store.%s (%q)", n, k)
		}
	}
}
