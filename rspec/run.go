package rspec

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/geniam/geniam/am"
)

// Our request extension <geniam:run> (schemas/geniam-rspec-ext-1.xsd):
//
//	<geniam:run restart="on-failure" max_retries="3" time_limit="3600">
//	  <geniam:env name="RATE" value="10"/>
//	  <geniam:arg>/prog</geniam:arg><geniam:arg>-rate</geniam:arg>
//	</geniam:run>
//
// The limits match what the node agent accepts, so a request the parser
// takes is never refused later on the node.
const (
	maxRunItems     = 256
	maxRunItemBytes = 64 << 10
	maxTimeLimit    = 366 * 24 * 3600
	maxRetries      = 1000
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func parseRun(clientID string, el *element) (*am.Run, error) {
	bad := func(format string, args ...any) error {
		return am.Errorf(am.BadArgs, "node %q: geniam:run: "+format, append([]any{clientID}, args...)...)
	}
	r := &am.Run{Restart: am.RestartNever}
	if v, ok := el.attr("restart"); ok {
		switch v = strings.TrimSpace(v); v {
		case am.RestartNever, am.RestartOnFailure, am.RestartAlways:
			r.Restart = v
		default:
			return nil, bad("restart=%q: want never, on-failure or always", clip(v, 40))
		}
	}
	num := func(name string, max int64) (int64, error) {
		v, ok := el.attr(name)
		if !ok {
			return 0, nil
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 || n > max {
			return 0, bad("%s=%q: want a whole number from 0 to %d", name, clip(v, 40), max)
		}
		return n, nil
	}
	n, err := num("max_retries", maxRetries)
	if err != nil {
		return nil, err
	}
	if n > 0 && r.Restart != am.RestartOnFailure {
		return nil, bad("max_retries only goes with restart=\"on-failure\"")
	}
	r.MaxRetries = int(n)
	if r.TimeLimit, err = num("time_limit", maxTimeLimit); err != nil {
		return nil, err
	}
	for _, c := range el.elementsIn(am.GeniamNamespace) {
		switch c.Local {
		case "env":
			name, _ := c.attr("name")
			value, hasValue := c.attr("value")
			if !envName.MatchString(name) || !hasValue {
				return nil, bad("an env element needs name (letters, digits, _) and value; got name=%q", clip(name, 40))
			}
			r.Env = append(r.Env, name+"="+value)
		case "arg":
			r.Args = append(r.Args, c.text())
		default:
			return nil, bad("unknown element geniam:%s (want env or arg)", clip(c.Local, 40))
		}
	}
	if len(r.Env) > maxRunItems || len(r.Args) > maxRunItems {
		return nil, bad("at most %d env and %d arg elements", maxRunItems, maxRunItems)
	}
	for _, a := range append(append([]string(nil), r.Env...), r.Args...) {
		if len(a) > maxRunItemBytes || strings.ContainsRune(a, 0) {
			return nil, bad("an env or arg is longer than %d bytes or contains NUL", maxRunItemBytes)
		}
	}
	if len(r.Args) > 0 && r.Args[0] == "" {
		return nil, bad("the first arg (the program) is empty")
	}
	return r, nil
}

// runElement is the manifest's <geniam:run>: what was granted.
func runElement(r *am.Run) *element {
	el := &element{Space: am.GeniamNamespace, Local: "run", Attrs: []attr{{"", "restart", r.Restart}}}
	if r.MaxRetries > 0 {
		el.Attrs = append(el.Attrs, attr{"", "max_retries", strconv.Itoa(r.MaxRetries)})
	}
	if r.TimeLimit > 0 {
		el.Attrs = append(el.Attrs, attr{"", "time_limit", strconv.FormatInt(r.TimeLimit, 10)})
	}
	for _, e := range r.Env {
		k, v, _ := strings.Cut(e, "=")
		el.Children = append(el.Children, &element{Space: am.GeniamNamespace, Local: "env", Attrs: []attr{{"", "name", k}, {"", "value", v}}})
	}
	for _, a := range r.Args {
		el.Children = append(el.Children, &element{Space: am.GeniamNamespace, Local: "arg", Children: []any{charData(a)}})
	}
	return el
}

// text is the element's character data (comments and child elements left out).
func (e *element) text() string {
	var b strings.Builder
	for _, c := range e.Children {
		if t, ok := c.(charData); ok {
			b.WriteString(string(t))
		}
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
