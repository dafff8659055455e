// Command geni-am-bench is a load generator for a running GENI aggregate
// (any AM API v3 URL): it calls it over real TLS with real credentials and
// prints calls/s and p50/p95/p99 latency per scenario.
//
//	geni-am-bench --am https://127.0.0.1:8001/ --cert alice-cert.pem --key alice-key.pem \
//	    --ch https://127.0.0.1:8000/ [--scenarios getversion,...] [--duration 10s] [--count 1000] \
//	    [--json out.json] [--svg out.svg] [--pgbench postgres://...]
//
// Scenarios (all by default): getversion (one keep-alive connection),
// getversion-newconn (a new TLS connection per call), listresources and
// listresources-compressed (user credential), getversion-pairs (pairs of
// GetVersion calls with each --clients count: the floor under
// allocate-delete), allocate-delete (pairs, with
// each --clients count, every client in its own slice), provision (N slivers
// to geni_ready). Each scenario stops at --count calls or --duration.
// Credentials come from files (--user-cred, --slice-cred/--slice) or from a
// gcf-compatible clearinghouse (--ch), which makes one slice per client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is the parsed command line.
type config struct {
	URL              string
	TLS              tlsOptions
	UserCred         string
	SliceCreds       []string
	SliceURNs        []string
	CH               string
	SliceAuthority   string
	Scenarios        []string
	Clients          []int
	Duration         time.Duration
	Count            int
	Timeout          time.Duration
	RequestFile      string
	ProvisionSlivers int
	DescribeSlivers  int
	ProvisionCycles  int
	ReadyTimeout     time.Duration
	PollInterval     time.Duration
	Start            bool
	PgBenchURL       string
	PgBenchBin       string
	PgBenchSeconds   int
	JSONFile         string
	SVGFile          string
	BaselineFile     string
}

// listFlag is a flag that may be repeated and also takes comma-separated lists.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	var sliceCreds, sliceURNs, scenarios, clients listFlag
	fs := flag.NewFlagSet("geni-am-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "am", "", "URL of the aggregate's AM API v3 endpoint (required), e.g. https://127.0.0.1:8001/")
	fs.StringVar(&cfg.TLS.CertFile, "cert", "", "the caller's certificate (PEM, may include its chain) (required)")
	fs.StringVar(&cfg.TLS.KeyFile, "key", "", "the caller's private key (PEM) (required)")
	fs.StringVar(&cfg.TLS.CAFile, "ca", "", "verify the aggregate's (and clearinghouse's) certificate chain against these roots; by default, as omni, it is not checked")
	fs.StringVar(&cfg.UserCred, "user-cred", "", "user credential file (signed XML, or omni's JSON)")
	fs.Var(&sliceCreds, "slice-cred", "slice credential file; repeat for more slices (one per Allocate client)")
	fs.Var(&sliceURNs, "slice", "slice URN of the matching --slice-cred (default: the credential's target)")
	fs.StringVar(&cfg.CH, "ch", "", "gcf-compatible clearinghouse URL: get the user credential and one new slice per client from it")
	fs.StringVar(&cfg.SliceAuthority, "slice-authority", "", "authority of slices made with --ch (default: the authority of --cert's URN)")
	fs.Var(&scenarios, "scenarios", "comma-separated scenarios (default all): "+strings.Join(allScenarios, ","))
	fs.Var(&clients, "clients", "comma-separated client counts for allocate-delete (default 1,8,32)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "time limit of each scenario")
	fs.IntVar(&cfg.Count, "count", 1000, "call limit of each scenario (pairs for allocate-delete)")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "timeout of one call")
	fs.StringVar(&cfg.RequestFile, "request", "", "request RSpec for Allocate (default: one container, as docs/examples)")
	fs.IntVar(&cfg.ProvisionSlivers, "provision-slivers", 1, "slivers per Provision: the request's nodes are copied up to this many")
	fs.IntVar(&cfg.DescribeSlivers, "describe-slivers", 100, "slivers of the slice that describe-status reads")
	fs.IntVar(&cfg.ProvisionCycles, "provision-cycles", 3, "Allocate/Provision/ready/Delete cycles (at least one; also bounded by --duration)")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 2*time.Minute, "how long slivers may take to become geni_ready")
	fs.DurationVar(&cfg.PollInterval, "poll", time.Second, "interval between Status polls while provisioning (the resolution of the time to ready)")
	fs.BoolVar(&cfg.Start, "start", true, "send geni_start when every provisioned sliver waits in geni_notready")
	fs.StringVar(&cfg.PgBenchURL, "pgbench", "", "postgres:// URL: also run pgbench on a scratch database on that server, to compare Allocate with the database's ceiling")
	fs.StringVar(&cfg.PgBenchBin, "pgbench-bin", defaultPgBench, "the pgbench binary")
	fs.IntVar(&cfg.PgBenchSeconds, "pgbench-seconds", 10, "pgbench -T")
	fs.StringVar(&cfg.JSONFile, "json", "", "write all results to this file as JSON")
	fs.StringVar(&cfg.SVGFile, "svg", "", "write a bar chart (calls/s and p95 per scenario) to this SVG file")
	fs.StringVar(&cfg.BaselineFile, "baseline", "", "--json file of an earlier run (e.g. a smaller inventory): print each row's p99 as a multiple of that run's")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.URL == "" && fs.NArg() == 1 {
		cfg.URL = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.URL == "" {
		return cfg, errors.New("--am URL is required")
	}
	if !strings.HasPrefix(cfg.URL, "https://") {
		return cfg, fmt.Errorf("--am %q: the AM API is served over https", cfg.URL)
	}
	cfg.SliceCreds, cfg.SliceURNs = sliceCreds, sliceURNs
	cfg.Scenarios = scenarios
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = allScenarios
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(allScenarios, s) {
			return cfg, fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(allScenarios, ", "))
		}
	}
	if len(clients) == 0 {
		clients = listFlag{"1", "8", "32"}
	}
	for _, c := range clients {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 1000 {
			return cfg, fmt.Errorf("--clients: %q is not a count from 1 to 1000", c)
		}
		cfg.Clients = append(cfg.Clients, n)
	}
	switch {
	case cfg.Duration <= 0:
		return cfg, errors.New("--duration must be positive")
	case cfg.Count < 1:
		return cfg, errors.New("--count must be at least 1")
	case cfg.Timeout <= 0 || cfg.ReadyTimeout <= 0 || cfg.PollInterval <= 0:
		return cfg, errors.New("--timeout, --ready-timeout and --poll must be positive")
	case cfg.ProvisionSlivers < 1 || cfg.ProvisionSlivers > maxSlivers:
		return cfg, fmt.Errorf("--provision-slivers must be from 1 to %d", maxSlivers)
	case cfg.DescribeSlivers < 1 || cfg.DescribeSlivers > maxSlivers:
		return cfg, fmt.Errorf("--describe-slivers must be from 1 to %d", maxSlivers)
	case cfg.ProvisionCycles < 1:
		return cfg, errors.New("--provision-cycles must be at least 1")
	case cfg.CH != "" && (len(cfg.SliceCreds) > 0 || cfg.UserCred != ""):
		return cfg, errors.New("give credentials either by file or by --ch, not both")
	}
	return cfg, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "geni-am-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if _, err := runBench(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "geni-am-bench:", err)
		os.Exit(1)
	}
}

// runBench gets the credentials, runs the selected scenarios in order,
// prints the table and writes the files asked for.
func runBench(ctx context.Context, cfg config, stdout, stderr io.Writer) (*report, error) {
	tlsCfg, err := clientTLSConfig(cfg.TLS)
	if err != nil {
		return nil, err
	}
	request, err := readRequest(cfg.RequestFile)
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, tls: tlsCfg, request: request, log: stderr}
	maxClients := 1
	for _, n := range cfg.Clients {
		maxClients = max(maxClients, n)
	}
	needSlices := slices.Contains(cfg.Scenarios, scAllocateDelete) || slices.Contains(cfg.Scenarios, scProvision) ||
		slices.Contains(cfg.Scenarios, scDescribeStatus)
	if cfg.CH != "" {
		n := 0
		if needSlices {
			n = maxClients
			if !slices.Contains(cfg.Scenarios, scAllocateDelete) {
				n = 1
			}
		}
		b.logf("clearinghouse %s: a user credential and %d slice(s)", cfg.CH, n)
		chCtx, cancel := context.WithTimeout(ctx, chTimeout)
		ch := newRPCClient(cfg.CH, tlsCfg, true, cfg.Timeout, nil)
		b.creds, err = credentialsFromCH(chCtx, ch, cfg.TLS.CertFile, cfg.SliceAuthority, n)
		ch.close()
		cancel()
	} else {
		b.creds, err = credentialsFromFiles(cfg.UserCred, cfg.SliceCreds, cfg.SliceURNs)
	}
	if err != nil {
		return nil, err
	}

	rep := &report{AM: cfg.URL, Started: time.Now().UTC(), Duration: cfg.Duration.String(), Count: cfg.Count,
		Settings: map[string]any{"scenarios": cfg.Scenarios, "clients": cfg.Clients, "provision_slivers": cfg.ProvisionSlivers, "describe_slivers": cfg.DescribeSlivers,
			"provision_cycles": cfg.ProvisionCycles, "ready_timeout": cfg.ReadyTimeout.String(), "poll": cfg.PollInterval.String(),
			"credentials": credentialSource(cfg), "server_verified": cfg.TLS.CAFile != ""}}
	var pgbenchBefore *pgbenchResult
	if cfg.PgBenchURL != "" {
		b.logf("pgbench on a scratch database, before the scenarios (%d s)", cfg.PgBenchSeconds)
		if pgbenchBefore, err = runPgBench(ctx, cfg.PgBenchBin, cfg.PgBenchURL, cfg.PgBenchSeconds); err != nil {
			rep.Notes = append(rep.Notes, "pgbench before the scenarios failed: "+err.Error())
		}
	}
	for _, sc := range cfg.Scenarios {
		if ctx.Err() != nil {
			break
		}
		b.logf("scenario %s", sc)
		switch sc {
		case scGetVersion:
			rep.Results = append(rep.Results, b.getVersion(ctx, scGetVersion, 1, 1, true)...)
		case scGetVersionNewConn:
			rep.Results = append(rep.Results, b.getVersion(ctx, scGetVersionNewConn, 1, 1, false)...)
		case scListResources:
			rep.Results = append(rep.Results, b.listResources(ctx, false)...)
		case scListResourcesZ:
			rep.Results = append(rep.Results, b.listResources(ctx, true)...)
		case scGetVersionPairs:
			for _, n := range cfg.Clients {
				rep.Results = append(rep.Results, b.getVersion(ctx, rowGetVersionPair, n, 2, true)...)
			}
		case scAllocateDelete:
			b.cleanSlices(ctx, maxClients)
			for _, n := range cfg.Clients {
				rep.Results = append(rep.Results, b.allocateDelete(ctx, n)...)
			}
		case scProvision:
			rep.Results = append(rep.Results, b.provision(ctx)...)
		case scDescribeStatus:
			rep.Results = append(rep.Results, b.describeStatus(ctx)...)
		}
	}
	for _, res := range rep.Results {
		if res.Skipped == "" && res.Calls == 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s with %d clients completed no call", res.Scenario, res.Clients))
		}
		if res.Skipped == "" && res.Clients == 1 && res.Calls > 1 && res.Handshakes >= int64(res.Calls) &&
			(res.Scenario == scGetVersion || res.Scenario == scListResources) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s made %d TLS handshakes for %d calls: the aggregate does not keep connections alive",
				res.Scenario, res.Handshakes, res.Calls))
		}
	}
	if cfg.PgBenchURL != "" && ctx.Err() == nil {
		b.logf("pgbench on a scratch database, after the scenarios (%d s)", cfg.PgBenchSeconds)
		if rep.PgBench, err = runPgBench(ctx, cfg.PgBenchBin, cfg.PgBenchURL, cfg.PgBenchSeconds); err != nil {
			rep.Notes = append(rep.Notes, "pgbench failed: "+err.Error())
		} else if pgbenchBefore != nil {
			rep.PgBench.TPSBefore = pgbenchBefore.TPS
		}
	}
	if cfg.BaselineFile != "" {
		if rep.Baseline, err = readBaseline(cfg.BaselineFile); err != nil {
			return rep, err
		}
	}
	if err := writeTable(stdout, rep); err != nil {
		return rep, err
	}
	if cfg.JSONFile != "" {
		if err := writeJSON(cfg.JSONFile, rep); err != nil {
			return rep, err
		}
	}
	if cfg.SVGFile != "" {
		if err := os.WriteFile(cfg.SVGFile, renderSVG(rep), 0o644); err != nil {
			return rep, err
		}
	}
	return rep, ctx.Err()
}

func credentialSource(cfg config) string {
	if cfg.CH != "" {
		return "clearinghouse " + cfg.CH
	}
	return "files"
}
