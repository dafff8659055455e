package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/store"
	"github.com/spf13/pflag"
)

func init() {
	commands["admin"] = func(args []string) error {
		return runAdmin(context.Background(), args, os.Stdout)
	}
}

const adminUsage = `usage: geni-am admin [--config FILE] [--db.url URL] [--json] COMMAND

  nodes list                                   every node: state, slots used/capacity
  nodes show NAME
  nodes calendar NAME                          its bookings: reservations and exclusive slivers, by start
  nodes add NAME --agent URL [--capacity N] [--types container,exclusive] [--hardware TYPE]
  nodes drain NAME [--reason TEXT]             keep its slivers, take no new ones
  nodes undrain NAME                           take new slivers again (also un-retires)
  nodes retire NAME                            gone from the advertisement; row kept for history
  nodes vtep NAME ADDRESS|none                 its address on the experiment network (links across nodes)
  slices list | slices show URN
  slivers list [--node NAME] [--slice URN] [--user URN]
  slivers show URN                             the sliver and its history
  sliver extend URN --until TIME|DURATION      e.g. --until 72h or --until 2026-12-01T00:00:00Z
  sliver expire URN                            the reaper deletes it at its next sweep
  slice shutdown URN | slice restore URN
  jobs list [--node NAME] [--slice URN] [--state STATE] [--limit N]
  audit [--slice URN] [--user URN] [--log-id ID] [--since DURATION|TIME] [--limit N]
  maintenance on "MESSAGE" | maintenance off | maintenance status
  reload                                       every aggregate process on this database reloads as on SIGHUP
`

// adminFlags are the flags every admin command accepts.
type adminFlags struct {
	json                     bool
	node, slice, user, logID string
	since, until, reason     string
	state                    string
	agent, types, hardware   string
	capacity, limit          int
	configFile               string
	fs                       *pflag.FlagSet
	positional               []string
	out                      io.Writer
	st                       *store.Store
	authority, actor         string
}

func runAdmin(ctx context.Context, args []string, out io.Writer) error {
	f := &adminFlags{out: out}
	fs := pflag.NewFlagSet("admin", pflag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, adminUsage) }
	fs.StringVar(&f.configFile, "config", "", "YAML configuration file")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of a table")
	fs.StringVar(&f.node, "node", "", "filter: node name")
	fs.StringVar(&f.slice, "slice", "", "filter: slice URN")
	fs.StringVar(&f.user, "user", "", "filter: user URN")
	fs.StringVar(&f.logID, "log-id", "", "filter: log id of one call")
	fs.StringVar(&f.since, "since", "", "audit: from this long ago (24h) or this time (RFC 3339)")
	fs.StringVar(&f.until, "until", "", "sliver extend: new expiry, a duration from now or a time")
	fs.StringVar(&f.state, "state", "", "jobs list: queued, running, done, failed or cancelled")
	fs.StringVar(&f.reason, "reason", "", "nodes drain: why (shown to experimenters)")
	fs.StringVar(&f.agent, "agent", "", "nodes add: https://host:port of the node agent")
	fs.StringVar(&f.types, "types", "container", "nodes add: sliver types, comma-separated")
	fs.StringVar(&f.hardware, "hardware", "docker-host", "nodes add: hardware type")
	fs.IntVar(&f.capacity, "capacity", 1, "nodes add: container slots")
	fs.IntVar(&f.limit, "limit", 100, "most rows to show (audit, jobs)")
	config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	f.fs, f.positional = fs, fs.Args()
	if len(f.positional) == 0 {
		fmt.Fprint(os.Stderr, adminUsage)
		return errors.New("admin: no command")
	}
	cfg, err := config.Load(f.configFile, fs)
	if err != nil {
		return err
	}
	if cfg.DB.URL == "" {
		return errors.New("db.url is not set (GENIAM_DB_URL, --db.url or the configuration file)")
	}
	st, err := store.Connect(ctx, cfg.DB.URL, 0)
	if err != nil {
		return err
	}
	defer st.Close()
	f.st, f.authority, f.actor = st, cfg.Authority(), currentAdmin()
	return f.run(ctx)
}

// currentAdmin names the operator in sliver_history and settings (a
// variable so the documentation examples do not depend on who runs them).
var currentAdmin = adminActor

// adminActor is admin:<login name>.
func adminActor() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return "admin:" + name
}

func (f *adminFlags) arg(i int, what string) (string, error) {
	if len(f.positional) <= i || f.positional[i] == "" {
		return "", fmt.Errorf("admin %s: missing %s", strings.Join(f.positional[:min(i, len(f.positional))], " "), what)
	}
	return f.positional[i], nil
}

// adminCommand is one command of geni-am admin: the words that name it
// ("nodes " is the noun alone; a name without a space takes any verb), and,
// for one that acts on a named object, what the word after them names.
type adminCommand struct {
	names []string
	arg   string
	run   func(ctx context.Context, f *adminFlags, arg string) error
}

// adminCommands is every command of adminUsage.
var adminCommands = []adminCommand{
	{[]string{"nodes list", "nodes "}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		rows, err := f.st.Nodes(ctx)
		if err != nil {
			return err
		}
		return f.print(rows, "name", "state", "used", "capacity", "sliver_types", "agent_url", "reason")
	}},
	{[]string{"nodes show"}, "node name", func(ctx context.Context, f *adminFlags, name string) error {
		n, err := f.st.Node(ctx, name)
		if err != nil {
			return err
		}
		if err := f.print([]store.NodeRow{*n}); err != nil || f.json {
			return err
		}
		slivers, err := f.st.AdminSlivers(ctx, store.SliverFilter{Node: name})
		if err != nil {
			return err
		}
		fmt.Fprintln(f.out)
		return f.print(sliverRows(slivers), "urn", "slice", "client_id", "allocation", "operational", "expires", "created_by")
	}},
	{[]string{"nodes calendar"}, "node name", func(ctx context.Context, f *adminFlags, name string) error {
		rows, err := f.st.Calendar(ctx, name)
		if err != nil {
			return err
		}
		return f.print(rows, "start", "end", "kind", "allocation", "operational", "user", "slice")
	}},
	{[]string{"nodes add"}, "node name", func(ctx context.Context, f *adminFlags, name string) error {
		if f.agent == "" {
			return errors.New("admin nodes add: --agent https://host:port is required")
		}
		err := f.st.AddNode(ctx, store.NewNode{Name: name, ComponentURN: am.URN{Authority: f.authority, Type: "node", Name: name}.String(),
			AgentURL: f.agent, HardwareType: f.hardware, SliverTypes: config.List(f.types), Capacity: f.capacity})
		if err != nil {
			return err
		}
		return f.done("node %s added", name)
	}},
	{[]string{"nodes vtep"}, "node name", func(ctx context.Context, f *adminFlags, name string) error {
		addr, err := f.arg(3, "experiment network address (or none)")
		if err != nil {
			return err
		}
		if addr == "none" {
			addr = ""
		}
		if err := f.st.SetNodeVTEP(ctx, name, addr); err != nil {
			return err
		}
		return f.done("node %s experiment address %s", name, firstOr(addr, "cleared"))
	}},
	{[]string{"nodes drain"}, "node name", setNodeState("drained", "drained")},
	{[]string{"nodes undrain"}, "node name", setNodeState("ok", "takes new slivers")},
	{[]string{"nodes retire"}, "node name", setNodeState("retired", "retired")},
	{[]string{"slices list", "slices "}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		rows, err := f.st.Slices(ctx, "")
		if err != nil {
			return err
		}
		return f.print(rows, "urn", "slivers", "shut_down", "shut_down_by", "credential_expires")
	}},
	{[]string{"slices show", "slice show"}, "slice URN", func(ctx context.Context, f *adminFlags, urn string) error {
		rows, err := f.st.Slices(ctx, urn)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return am.Errorf(am.SearchFailed, "no slice %s", urn)
		}
		slivers, err := f.st.AdminSlivers(ctx, store.SliverFilter{Slice: urn})
		if err != nil {
			return err
		}
		if f.json {
			return f.printJSON(map[string]any{"slice": rows[0], "slivers": sliverRows(slivers)})
		}
		if err := f.print(rows, "urn", "slivers", "shut_down", "shut_down_by", "credential_expires"); err != nil {
			return err
		}
		fmt.Fprintln(f.out)
		return f.print(sliverRows(slivers), "urn", "node", "client_id", "allocation", "operational", "expires", "created_by")
	}},
	{[]string{"slivers list", "slivers "}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		slivers, err := f.st.AdminSlivers(ctx, store.SliverFilter{Node: f.node, Slice: f.slice, User: f.user})
		if err != nil {
			return err
		}
		return f.print(sliverRows(slivers), "urn", "node", "slice", "client_id", "allocation", "operational", "expires", "created_by")
	}},
	{[]string{"slivers show", "sliver show"}, "sliver URN", func(ctx context.Context, f *adminFlags, urn string) error {
		slivers, err := f.st.AdminSlivers(ctx, store.SliverFilter{URN: urn})
		if err != nil {
			return err
		}
		hist, err := f.st.SliverHistory(ctx, urn)
		if err != nil {
			return err
		}
		if len(slivers) == 0 && len(hist) == 0 {
			return am.Errorf(am.SearchFailed, "no sliver %s, live or in the history", urn)
		}
		if f.json {
			return f.printJSON(map[string]any{"sliver": sliverRows(slivers), "history": hist})
		}
		if len(slivers) > 0 {
			if err := f.printVertical(sliverRows(slivers)[0]); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(f.out, "(no longer live)")
		}
		fmt.Fprintln(f.out)
		return f.print(hist, "at", "event", "actor", "allocation", "operational", "expires", "error")
	}},
	{[]string{"sliver extend", "slivers extend"}, "sliver URN", func(ctx context.Context, f *adminFlags, urn string) error {
		until, err := parseWhen(f.until, time.Now(), true)
		if err != nil || f.until == "" {
			return fmt.Errorf("admin sliver extend: --until wants a duration from now (72h) or an RFC 3339 time: %q", f.until)
		}
		if err := f.st.SetSliverExpiry(ctx, urn, until, "admin:extend", f.actor); err != nil {
			return err
		}
		return f.done("sliver %s now expires at %s", urn, until.UTC().Format(time.RFC3339))
	}},
	{[]string{"sliver expire", "slivers expire"}, "sliver URN", func(ctx context.Context, f *adminFlags, urn string) error {
		if err := f.st.SetSliverExpiry(ctx, urn, time.Now(), "admin:expire", f.actor); err != nil {
			return err
		}
		return f.done("sliver %s expired; the reaper deletes it at its next sweep", urn)
	}},
	{[]string{"slice shutdown", "slices shutdown"}, "slice URN", func(ctx context.Context, f *adminFlags, urn string) error {
		slice, err := am.URNOfType(urn, "slice")
		if err != nil {
			return fmt.Errorf("admin slice shutdown: %v", err)
		}
		urn = slice.String()
		if err := f.st.Shutdown(ctx, urn, f.actor, time.Now()); err != nil {
			return err
		}
		return f.done("slice %s shut down: its slivers are stopped and kept; every call on it is refused until restore", urn)
	}},
	{[]string{"slice restore", "slices restore"}, "slice URN", func(ctx context.Context, f *adminFlags, urn string) error {
		if err := f.st.RestoreSlice(ctx, urn, f.actor); err != nil {
			return err
		}
		return f.done("slice %s restored", urn)
	}},
	{[]string{"jobs list", "jobs "}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		cols, rows, err := f.st.Jobs(ctx, store.JobFilter{Node: f.node, Slice: f.slice, State: f.state, Limit: f.limit})
		if store.IsNoJobs(err) {
			return f.done("no jobs: %v", err)
		}
		if err != nil {
			return err
		}
		return f.printTable(cols, rows)
	}},
	{[]string{"maintenance on"}, "message (experimenters see it)", func(ctx context.Context, f *adminFlags, msg string) error {
		if err := f.st.SetSetting(ctx, store.SettingMaintenance, msg, f.actor); err != nil {
			return err
		}
		return f.done("maintenance on: new Allocates are refused with %q (all aggregate processes, within a second)", msg)
	}},
	{[]string{"maintenance off"}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		if err := f.st.SetSetting(ctx, store.SettingMaintenance, "", f.actor); err != nil {
			return err
		}
		return f.done("maintenance off")
	}},
	{[]string{"maintenance status", "maintenance "}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		msg, err := f.st.Maintenance(ctx)
		if err != nil {
			return err
		}
		if msg == "" {
			return f.done("maintenance off")
		}
		return f.done("maintenance on: %s", msg)
	}},
	{[]string{"reload"}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		req := time.Now().UTC().Format(time.RFC3339Nano) + " by " + f.actor
		if err := f.st.SetSetting(ctx, store.SettingReload, req, f.actor); err != nil {
			return err
		}
		return f.done("reload requested: every aggregate process on this database reloads its trusted roots and operator "+
			"policy from its own configuration within %s, as on SIGHUP (their logs and geniam_policy_reloads_total say how it went)",
			reloadPollInterval)
	}},
	{[]string{"audit"}, "", func(ctx context.Context, f *adminFlags, _ string) error {
		since, err := parseWhen(f.since, time.Now(), false)
		if err != nil {
			return fmt.Errorf("admin audit: --since wants a duration (24h) or an RFC 3339 time: %q", f.since)
		}
		rows, err := f.st.Audit(ctx, store.AuditFilter{Slice: f.slice, User: f.user, LogID: f.logID, Since: since, Limit: f.limit})
		if err != nil {
			return err
		}
		return f.print(rows, "at", "log_id", "method", "code", "user", "slice", "ms", "output")
	}},
}

// setNodeState is nodes drain, undrain and retire.
func setNodeState(state, said string) func(ctx context.Context, f *adminFlags, name string) error {
	return func(ctx context.Context, f *adminFlags, name string) error {
		if err := f.st.SetNodeState(ctx, name, state, f.reason); err != nil {
			return err
		}
		return f.done("node %s %s", name, said)
	}
}

func (f *adminFlags) run(ctx context.Context) error {
	noun := f.positional[0]
	verb := ""
	if len(f.positional) > 1 {
		verb = f.positional[1]
	}
	for _, c := range adminCommands {
		if !slices.Contains(c.names, noun+" "+verb) && !slices.Contains(c.names, noun) {
			continue
		}
		var arg string
		if c.arg != "" {
			var err error
			if arg, err = f.arg(2, c.arg); err != nil {
				return err
			}
		}
		return c.run(ctx, f, arg)
	}
	fmt.Fprint(os.Stderr, adminUsage)
	return fmt.Errorf("admin: unknown command %q", strings.Join(f.positional, " "))
}

// parseWhen reads a duration (from now: ahead for future, back otherwise)
// or an RFC 3339 time; "" is the zero time.
func parseWhen(s string, now time.Time, future bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if future {
			return now.Add(d), nil
		}
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

// adminSliver is a sliver as the admin commands print it.
type adminSliver struct {
	URN         string    `json:"urn"`
	Node        string    `json:"node"`
	Slice       string    `json:"slice"`
	ClientID    string    `json:"client_id"`
	Type        string    `json:"type"`
	Allocation  string    `json:"allocation"`
	Operational string    `json:"operational"`
	Expires     time.Time `json:"expires"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	ImageURL    string    `json:"image_url"`
	ImageSHA256 string    `json:"image_sha256"`
	Error       string    `json:"error"`
}

func sliverRows(slivers []am.Sliver) []adminSliver {
	out := make([]adminSliver, 0, len(slivers))
	for _, s := range slivers {
		out = append(out, adminSliver{URN: s.URN, Node: s.NodeName, Slice: s.SliceURN, ClientID: s.ClientID, Type: s.SliverType,
			Allocation: string(s.Allocation), Operational: string(s.Operational), Expires: s.Expires, CreatedBy: s.CreatedBy,
			CreatedAt: s.CreatedAt, ImageURL: s.Image.URL, ImageSHA256: s.Image.SHA256, Error: s.Error})
	}
	return out
}

func (f *adminFlags) done(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if f.json {
		return f.printJSON(map[string]string{"result": msg})
	}
	_, err := fmt.Fprintln(f.out, msg)
	return err
}

func (f *adminFlags) printJSON(v any) error {
	enc := json.NewEncoder(f.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// print writes rows (a slice of structs with json tags) as JSON, or as an
// aligned table of the named columns (all when none are named).
func (f *adminFlags) print(rows any, columns ...string) error {
	if f.json {
		return f.printJSON(rows)
	}
	v := reflect.ValueOf(rows)
	if v.Len() == 0 {
		_, err := fmt.Fprintln(f.out, "(none)")
		return err
	}
	fields := jsonFields(v.Type().Elem())
	if len(columns) == 0 {
		for _, fl := range fields {
			columns = append(columns, fl.name)
		}
	}
	var cells [][]string
	for i := 0; i < v.Len(); i++ {
		row := make([]string, len(columns))
		for j, c := range columns {
			for _, fl := range fields {
				if fl.name == c {
					row[j] = cellText(v.Index(i).Field(fl.index))
				}
			}
		}
		cells = append(cells, row)
	}
	return f.printTable(columns, cells)
}

// printVertical writes one struct as "field: value" lines.
func (f *adminFlags) printVertical(row any) error {
	v := reflect.ValueOf(row)
	tw := tabwriter.NewWriter(f.out, 0, 4, 2, ' ', 0)
	for _, fl := range jsonFields(v.Type()) {
		text := cellText(v.Field(fl.index))
		if text == "" {
			text = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", fl.name, text)
	}
	return tw.Flush()
}

func (f *adminFlags) printTable(columns []string, rows [][]string) error {
	tw := tabwriter.NewWriter(f.out, 0, 4, 2, ' ', 0)
	head := make([]string, len(columns))
	for i, c := range columns {
		head[i] = strings.ToUpper(c)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, r := range rows {
		clean := make([]string, len(r))
		for i, c := range r {
			clean[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
			if clean[i] == "" {
				clean[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(clean, "\t"))
	}
	return tw.Flush()
}

type jsonField struct {
	name  string
	index int
}

func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, jsonField{name, i})
		}
	}
	return out
}

func cellText(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case time.Time:
		if x.IsZero() {
			return ""
		}
		return x.UTC().Format(time.RFC3339)
	case []string:
		return strings.Join(x, ",")
	case json.RawMessage:
		return string(x)
	case float64:
		return fmt.Sprintf("%.1f", x)
	case string:
		if len(x) > 120 {
			return x[:117] + "..."
		}
		return x
	}
	return fmt.Sprint(v.Interface())
}

func firstOr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
