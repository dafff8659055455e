// Package config loads geniam's configuration with viper: defaults (below,
// documented field by field), then a YAML file, then GENIAM_* environment
// variables (GENIAM_DB_URL sets db.url), then command-line flags.
//
// Every key is registered with SetDefault, so environment variables work for
// keys absent from the file (viper's Unmarshal otherwise ignores env-only keys:
// research/go-deps.md §4). docs/configuration.md is generated from the `doc`
// tags here and a test keeps it in step.
package config

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration of the aggregate and its tools.
type Config struct {
	Listen       string       `mapstructure:"listen" doc:"address of the AM API v3 XML-RPC/TLS listener" default:"127.0.0.1:8001"`
	URL          string       `mapstructure:"url" doc:"absolute URL clients use (geni_api_versions); empty: https://<listen>/" default:""`
	AMURN        string       `mapstructure:"am_urn" doc:"the aggregate's URN; its authority part names slivers and nodes" default:"urn:publicid:IDN+geniam.localhost+authority+am"`
	VarDir       string       `mapstructure:"var_dir" doc:"directory for state the aggregate keeps on disk (dev cluster, dev PKI, data archives)" default:"./var"`
	Operators    string       `mapstructure:"operators" doc:"user URNs (comma- or space-separated) of the aggregate's operators, at every entry point (am.Gate): they may act on shut-down slices, their client certificates open the console's operator view, and they see every slice there" default:"" reload:"sighup"`
	TLS          TLS          `mapstructure:"tls"`
	DB           DB           `mapstructure:"db"`
	Limits       Limits       `mapstructure:"limits"`
	Lifecycle    Lifecycle    `mapstructure:"lifecycle"`
	Reservations Reservations `mapstructure:"reservations"`
	Placement    Placement    `mapstructure:"placement"`
	Cache        Cache        `mapstructure:"cache"`
	Agents       Agents       `mapstructure:"agents"`
	Provisioning Provisioning `mapstructure:"provisioning"`
	SliverLimits SliverLimits `mapstructure:"sliver_limits"`
	Log          Log          `mapstructure:"log"`
	Operations   Operations   `mapstructure:"operations"`
	Console      Console      `mapstructure:"console"`
}

// TLS is the aggregate's identity and whom it trusts.
type TLS struct {
	Cert         string `mapstructure:"cert" doc:"PEM certificate (chain) of the aggregate" default:""`
	Key          string `mapstructure:"key" doc:"PEM private key of the aggregate" default:""`
	TrustedRoots string `mapstructure:"trusted_roots" doc:"directory of clearinghouse root certificates, read recursively: *.pem *.crt *.cert *.cer *.der and c_rehash links, PEM or DER; one set for TLS and credentials, reloaded on SIGHUP" default:""`
	LegacySHA1   bool   `mapstructure:"legacy_sha1" doc:"accept client certificates signed with SHA-1 (old GENI authorities) through our own chain walk; logged" default:"true"`
}

// DB is the PostgreSQL connection.
type DB struct {
	URL      string `mapstructure:"url" doc:"PostgreSQL URL; empty: a private cluster under var_dir/pg (make run)" default:""`
	MaxConns int    `mapstructure:"max_conns" doc:"connection pool size" default:"16"`
}

// Limits bound what one request may cost.
type Limits struct {
	MaxBody        int64         `mapstructure:"max_body" doc:"largest XML-RPC request body in bytes" default:"4194304"`
	RequestTimeout time.Duration `mapstructure:"request_timeout" doc:"longest time one call may run" default:"60s"`
	MaxNodes       int           `mapstructure:"max_nodes" doc:"most nodes one request RSpec may hold" default:"1000"`
	MaxLinks       int           `mapstructure:"max_links" doc:"most links (LANs) one request RSpec may hold, advertised; 0: links are refused (UNSUPPORTED). Links across nodes need each node's experiment address (geni-am admin nodes vtep) and agents with network.* set" default:"64"`
}

// Lifecycle sets sliver lifetimes and the reaper.
type Lifecycle struct {
	AllocationHold   time.Duration `mapstructure:"allocation_hold" doc:"how long an Allocate holds resources before Provision" default:"10m"`
	ProvisionDefault time.Duration `mapstructure:"provision_default" doc:"sliver lifetime granted by Provision (capped by the slice credential)" default:"168h"`
	MaxLease         time.Duration `mapstructure:"max_lease" doc:"longest a sliver may be renewed to, from now" default:"720h"`
	ReaperInterval   time.Duration `mapstructure:"reaper_interval" doc:"how often the reaper sweeps for expired slivers at the latest; it also wakes at the next expiry (at most once a second)" default:"10s"`
}

// Reservations are bookings of whole nodes for a future window (Allocate
// with geni_start_time; docs/operator.md, Reservations).
type Reservations struct {
	MaxLength  time.Duration `mapstructure:"max_length" doc:"longest window one reservation may book" default:"24h"`
	MaxAhead   time.Duration `mapstructure:"max_ahead" doc:"how far from now a reservation may start" default:"720h"`
	MaxPerNode time.Duration `mapstructure:"max_per_node" doc:"how much of one node's time the reservations of one user, and those of one project's slices, may hold at once (counting those not ended); 0: no limit" default:"0s"`
}

// Placement chooses nodes for unbound slivers.
type Placement struct {
	Policy string `mapstructure:"policy" doc:"spread (fewest slivers first) or pack (fill a node before the next)" default:"spread"`
}

// Cache says how stale the aggregate's in-memory copies may be. They make
// reads cheap on a big inventory; Allocate still decides on current data.
type Cache struct {
	Advertisement time.Duration `mapstructure:"advertisement" doc:"how long ListResources may serve an advertisement that misses sliver changes made by other aggregate processes on the same database (this process's changes and node edits show at the next call); 0: 1s, negative: no cache" default:"1s"`
	Nodes         time.Duration `mapstructure:"nodes" doc:"how old the node list an unbound Allocate plans on may be (the nodes it picks are checked under lock, and it refuses only on a fresh list); past it the list is read again in the background while Allocates plan on the old one, up to 5 times as old; 0: 1s, negative: read it in every Allocate" default:"1s"`
}

// Agents is how the aggregate reaches node agents.
type Agents struct {
	Cert string `mapstructure:"cert" doc:"client certificate the aggregate presents to node agents" default:""`
	Key  string `mapstructure:"key" doc:"its private key" default:""`
	CA   string `mapstructure:"ca" doc:"PEM CA that signed the node agents' certificates" default:""`
}

// Provisioning tunes the provisioner (docs/provisioning.md). It runs when
// agents.cert, agents.key and agents.ca are all set.
type Provisioning struct {
	Workers          int           `mapstructure:"workers" doc:"agent jobs this process runs at once" default:"8"`
	Lease            time.Duration `mapstructure:"lease" doc:"job lease, renewed while a worker works; a dead process's jobs are taken over after it" default:"30s"`
	MaxAttempts      int           `mapstructure:"max_attempts" doc:"attempts of a job whose agent keeps failing transiently before the sliver is geni_failed" default:"10"`
	BackoffMax       time.Duration `mapstructure:"backoff_max" doc:"longest wait between attempts (the wait doubles from 1s)" default:"2m"`
	HealthInterval   time.Duration `mapstructure:"health_interval" doc:"how often every agent is polled (health, sliver states, reconciliation)" default:"15s"`
	DownAfter        int           `mapstructure:"down_after" doc:"failed polls in a row before a node is made unavailable" default:"2"`
	ArchiveDir       string        `mapstructure:"archive_dir" doc:"where /data archives are kept; empty: var_dir/archive" default:""`
	ArchiveMaxBytes  int64         `mapstructure:"archive_max_bytes" doc:"largest /data archive kept (gzipped bytes) from one sliver; a node sending more (agents cap their own tars with max_archive_bytes) is cut off" default:"10737418240"`
	ArchiveRetention time.Duration `mapstructure:"archive_retention" doc:"how long /data archives of deleted or expired slivers stay downloadable" default:"168h"`
	DiskPressure     float64       `mapstructure:"disk_pressure" doc:"fraction of a node agent's state filesystem that, when no more than it is free, is disk pressure: the node takes no new slivers and its slivers' geni_error says so" default:"0.05"`
	StrayGrace       time.Duration `mapstructure:"stray_grace" doc:"how long a container of this aggregate that the database never knew is only reported (log, stray_containers); past it, its /data is archived and it is removed. 0: only ever reported" default:"0s"`
	IdleStop         time.Duration `mapstructure:"idle_stop" doc:"stop a running container after this long without activity (CPU, network, SSH logins), keeping it and /data (geni_start brings it back); 0 disables" default:"0s"`
	IdleWarn         time.Duration `mapstructure:"idle_warn" doc:"with idle_stop: warn this long before the stop (Status, the agent's log)" default:"10m"`
}

// SliverLimits are the resources of one sliver per sliver type (advertised,
// in the manifest, sent to the agent, which caps them by its own limits).
type SliverLimits struct {
	ContainerMemory int64   `mapstructure:"container_memory_bytes" doc:"memory (swap included) of a container sliver; 0: the node agent's memory_bytes" default:"1073741824"`
	ContainerCPUs   float64 `mapstructure:"container_cpus" doc:"CPUs of a container sliver; 0: the node agent's cpus" default:"1"`
	ContainerData   int64   `mapstructure:"container_data_bytes" doc:"size of a container sliver's /data (enforced where the agent has data_quota_bytes); 0: the agent's" default:"10737418240"`
	ContainerPids   int64   `mapstructure:"container_pids" doc:"processes and threads of a container sliver; 0: the node agent's pids_limit" default:"512"`
	ContainerArch   int64   `mapstructure:"container_archive_bytes" doc:"largest /data archive of a container sliver (tar bytes; what does not fit is left out, with a note); 0: the agent's max_archive_bytes" default:"10737418240"`
	ExclusiveMemory int64   `mapstructure:"exclusive_memory_bytes" doc:"memory of an exclusive sliver; 0: the node agent's memory_bytes" default:"0"`
	ExclusiveCPUs   float64 `mapstructure:"exclusive_cpus" doc:"CPUs of an exclusive sliver; 0: the node agent's cpus" default:"0"`
	ExclusiveData   int64   `mapstructure:"exclusive_data_bytes" doc:"size of an exclusive sliver's /data; 0: the agent's data_quota_bytes" default:"0"`
	ExclusivePids   int64   `mapstructure:"exclusive_pids" doc:"processes and threads of an exclusive sliver; 0: the node agent's pids_limit" default:"0"`
	ExclusiveArch   int64   `mapstructure:"exclusive_archive_bytes" doc:"largest /data archive of an exclusive sliver; 0: the agent's max_archive_bytes" default:"0"`
}

// ByType returns the limits per sliver type.
func (l SliverLimits) ByType() map[string]am.SliverLimits {
	return map[string]am.SliverLimits{
		am.SliverTypeContainer: {MemoryBytes: l.ContainerMemory, CPUs: l.ContainerCPUs, Pids: l.ContainerPids, DataBytes: l.ContainerData, ArchiveBytes: l.ContainerArch},
		am.SliverTypeExclusive: {MemoryBytes: l.ExclusiveMemory, CPUs: l.ExclusiveCPUs, Pids: l.ExclusivePids, DataBytes: l.ExclusiveData, ArchiveBytes: l.ExclusiveArch},
	}
}

// Log is logging.
type Log struct {
	Format string `mapstructure:"format" doc:"text or json" default:"text"`
	Level  string `mapstructure:"level" doc:"debug, info, warn or error" default:"info"`
}

// Operations is the operator's side listener and switches.
type Operations struct {
	Listen      string `mapstructure:"listen" doc:"address of the metrics and health listener; empty disables it" default:"127.0.0.1:9101"`
	Maintenance string `mapstructure:"maintenance" doc:"when set, new Allocates are refused with this message" default:"" reload:"sighup"`
	// Operator policy (am.OpsPolicy). Lists are separated by commas or spaces.
	Allow                string `mapstructure:"allow" doc:"glob patterns (* ? [..]) of user/tool URNs or authorities allowed to use the aggregate; empty: everyone the trusted roots vouch for" default:"" reload:"sighup"`
	Deny                 string `mapstructure:"deny" doc:"glob patterns of user/tool URNs or authorities refused (FORBIDDEN); deny wins over allow" default:"" reload:"sighup"`
	MaxSliversPerUser    int    `mapstructure:"max_slivers_per_user" doc:"most live slivers one user may hold here (REFUSED beyond); 0: no limit" default:"0" reload:"sighup"`
	MaxSliversPerProject int    `mapstructure:"max_slivers_per_project" doc:"most live slivers the slices of one project (slice authority with a subauthority, e.g. ch.geni.net:myproj) may hold; 0: no limit" default:"0" reload:"sighup"`
	UserLimits           string `mapstructure:"user_limits" doc:"per-user overrides of max_slivers_per_user: urn=N, comma-separated" default:"" reload:"sighup"`
	ProjectLimits        string `mapstructure:"project_limits" doc:"per-project overrides of max_slivers_per_project: authority:project=N, comma-separated" default:"" reload:"sighup"`
	AuditQueue           int    `mapstructure:"audit_queue" doc:"audit records waiting for the database at most; beyond, records are logged and counted (geniam_audit_dropped_total) instead" default:"10000"`
	AuditSpoolDir        string `mapstructure:"audit_spool_dir" doc:"where audit records wait on disk while the database is unreachable (replayed when it is back); empty: var_dir/audit-spool" default:""`
	AuditSpoolMax        int64  `mapstructure:"audit_spool_max" doc:"bytes the audit spool may hold; beyond, records are logged and counted (geniam_audit_failed_total) instead. 0: no spool" default:"268435456"`
}

// Console is the web console (am/console, docs/operator.md).
type Console struct {
	Listen    string        `mapstructure:"listen" doc:"address of the web console (HTTPS with the aggregate's certificate and trusted roots; a GENI client certificate is asked for, not required); keep it on loopback or a management network; empty disables it (make run serves it on 127.0.0.1:9102)" default:""`
	Operators string        `mapstructure:"operators" doc:"deprecated alias of the top-level operators (still read, added to it, with a warning at start)" default:"" reload:"sighup"`
	Token     string        `mapstructure:"token" doc:"a secret (at least 16 characters) that opens the operator view from the console's login page, for browsers without an operator certificate; empty: certificates only" default:""`
	Poll      time.Duration `mapstructure:"poll" doc:"how often the console looks for changes to push to open pages (one small query per interval while a page is open)" default:"1s"`
}

// Load reads the configuration. file may be ""; flags may be nil. Flags that
// were set on the command line win over everything else.
func Load(file string, flags *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	v.SetEnvPrefix("GENIAM")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for _, f := range Fields() {
		v.SetDefault(f.Key, f.Default)
	}
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
	}
	if flags != nil {
		var bindErr error
		flags.Visit(func(fl *pflag.Flag) {
			if err := v.BindPFlag(fl.Name, fl); err != nil && bindErr == nil {
				bindErr = err
			}
		})
		if bindErr != nil {
			return nil, bindErr
		}
	}
	var c Config
	if err := v.Unmarshal(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks values a typo would make dangerous.
func (c *Config) Validate() error {
	if u, err := am.ParseURN(c.AMURN); err != nil || u.Type != "authority" || u.Name != "am" {
		return fmt.Errorf("config: am_urn %q must look like urn:publicid:IDN+<authority>+authority+am", c.AMURN)
	}
	if c.Limits.MaxLinks < 0 || c.Limits.MaxLinks > 65000 {
		return fmt.Errorf("config: limits.max_links %d: want 0 to 65000", c.Limits.MaxLinks)
	}
	policy, err := am.ParsePlacementPolicy(c.Placement.Policy)
	if err != nil {
		return fmt.Errorf("config: placement.policy: %v", err)
	}
	c.Placement.Policy = string(policy)
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("config: log.format %q: want text or json", c.Log.Format)
	}
	if c.Lifecycle.AllocationHold <= 0 || c.Lifecycle.ProvisionDefault <= 0 || c.Lifecycle.MaxLease <= 0 {
		return fmt.Errorf("config: lifecycle durations must be positive")
	}
	if c.Reservations.MaxLength <= 0 || c.Reservations.MaxAhead <= 0 || c.Reservations.MaxPerNode < 0 {
		return fmt.Errorf("config: reservations.max_length and max_ahead must be positive, max_per_node not negative")
	}
	if c.Cache.Advertisement > time.Minute || c.Cache.Nodes > time.Minute {
		return fmt.Errorf("config: cache durations above a minute would hide other processes' changes for too long")
	}
	if p := c.Provisioning; p.IdleStop < 0 || (p.IdleStop > 0 && (p.IdleWarn < 0 || p.IdleWarn >= p.IdleStop)) {
		return fmt.Errorf("config: provisioning.idle_warn (%s) must be shorter than provisioning.idle_stop (%s)", p.IdleWarn, p.IdleStop)
	}
	for _, o := range c.OperatorURNs() {
		// A typo would silently leave the operator without their rights.
		if u, err := am.ParseURN(o); err != nil || u.Type != "user" {
			return fmt.Errorf("config: operators: %q is not a user URN (urn:publicid:IDN+<authority>+user+<name>)", o)
		}
	}
	if c.Console.Token != "" && len(c.Console.Token) < 16 {
		return fmt.Errorf("config: console.token must be at least 16 characters")
	}
	if c.Console.Poll < 100*time.Millisecond {
		return fmt.Errorf("config: console.poll %v is below 100ms", c.Console.Poll)
	}
	if c.Limits.MaxBody < 1024 {
		return fmt.Errorf("config: limits.max_body %d is too small", c.Limits.MaxBody)
	}
	for t, l := range c.SliverLimits.ByType() {
		if l.MemoryBytes < 0 || l.CPUs < 0 || l.Pids < 0 || l.DataBytes < 0 || l.ArchiveBytes < 0 {
			return fmt.Errorf("config: sliver_limits for %s slivers must not be negative", t)
		}
	}
	return nil
}

// OperatorURNs are the operators of the aggregate: the top-level operators
// key and its deprecated alias console.operators together, so that a
// configuration written before the alias moved keeps its operators.
func (c *Config) OperatorURNs() []string {
	return append(List(c.Operators), List(c.Console.Operators)...)
}

// Deprecated names the deprecated keys the configuration sets, each with
// its replacement, for the aggregate to warn about at start.
func (c *Config) Deprecated() []string {
	if c.Console.Operators != "" {
		return []string{"console.operators is deprecated: move its URNs to the top-level operators key (both are read meanwhile)"}
	}
	return nil
}

// List splits a list value: items separated by commas or white space.
func List(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// Authority is the authority part of the AM URN (e.g. "geniam.localhost").
func (c *Config) Authority() string {
	s := strings.TrimPrefix(c.AMURN, "urn:publicid:IDN+")
	if i := strings.Index(s, "+"); i >= 0 {
		return s[:i]
	}
	return s
}

// PublicURL is URL, or https://<listen>/ when unset.
func (c *Config) PublicURL() string {
	if c.URL != "" {
		return c.URL
	}
	return "https://" + c.Listen + "/"
}

// Field describes one configuration key.
type Field struct {
	Key     string // dotted, e.g. "db.url"
	Env     string // GENIAM_DB_URL
	Type    string
	Default string
	Doc     string
	// Reload marks a key a running aggregate reads again on SIGHUP (tag
	// reload:"sighup": the operator policy); the others take effect at the
	// next start.
	Reload bool
}

// Fields lists every key with its default and documentation, in key order.
func Fields() []Field {
	var out []Field
	walk(reflect.TypeOf(Config{}), "", &out)
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func walk(t reflect.Type, prefix string, out *[]Field) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := prefix + f.Tag.Get("mapstructure")
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			walk(f.Type, key+".", out)
			continue
		}
		typ := f.Type.String()
		if f.Type == reflect.TypeOf(time.Duration(0)) {
			typ = "duration"
		}
		*out = append(*out, Field{Key: key, Env: "GENIAM_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")),
			Type: typ, Default: f.Tag.Get("default"), Doc: f.Tag.Get("doc"), Reload: f.Tag.Get("reload") == "sighup"})
	}
}

// RestartKeys names the keys, in key order, whose values differ between the
// configuration an aggregate started with and next, and that only a restart
// puts in force (every key but those Field.Reload marks).
func RestartKeys(started, next *Config) []string {
	a, b := map[string]any{}, map[string]any{}
	values(reflect.ValueOf(*started), "", a)
	values(reflect.ValueOf(*next), "", b)
	var out []string
	for _, f := range Fields() {
		if !f.Reload && !reflect.DeepEqual(a[f.Key], b[f.Key]) {
			out = append(out, f.Key)
		}
	}
	return out
}

// values maps every key below v (a Config or one of its sections) to its value.
func values(v reflect.Value, prefix string, out map[string]any) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := prefix + f.Tag.Get("mapstructure")
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			values(v.Field(i), key+".", out)
			continue
		}
		out[key] = v.Field(i).Interface()
	}
}

// Reference renders the configuration reference in Markdown (docs/configuration.md).
func Reference() string {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from `am/config/config.go` (`go run ./cmd/geni-am config-reference`); a test fails when it is stale.\n")
	b.WriteString("Each key can be set in the YAML file given with `--config`, by its environment variable, or by the flag of the same name.\n\n")
	b.WriteString("| key | environment | type | default | meaning |\n|---|---|---|---|---|\n")
	for _, f := range Fields() {
		def := f.Default
		if def == "" {
			def = "(empty)"
		}
		doc := f.Doc
		if f.Reload {
			doc += " (reloaded on SIGHUP)"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | `%s` | %s |\n", f.Key, f.Env, f.Type, def, doc)
	}
	return b.String()
}

// AddFlags registers a flag per key on fs (names are the dotted keys).
func AddFlags(fs *pflag.FlagSet) {
	for _, f := range Fields() {
		fs.String(f.Key, f.Default, f.Doc)
	}
}

// WriteYAML writes the dotted keys of kv as a nested YAML file an operator can
// edit (used by make run for var/geniam.yaml).
func WriteYAML(path string, kv map[string]any) error {
	root := map[string]any{}
	for k, val := range kv {
		m := root
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = val
	}
	body, err := yaml.Marshal(root)
	if err != nil {
		return err
	}
	// Owner only: a configuration holds secrets (db.url's password, console.token).
	if err := os.WriteFile(path, append([]byte("# geniam configuration (keys: docs/configuration.md)\n"), body...), 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600) // a file that existed keeps its mode through WriteFile
}
