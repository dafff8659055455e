package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/geniapi"
	"github.com/geniam/geniam/credentials"
	"github.com/geniam/geniam/rspec"
	"github.com/geniam/geniam/store"
	"github.com/spf13/pflag"
)

func init() {
	commands["serve"] = func(args []string) error {
		cfg, err := loadConfig("serve", args)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		reread := func() (*config.Config, error) { return loadConfig("serve", args) }
		return serve(ctx, cfg, newLogger(cfg.Log), &serveHooks{reread: reread})
	}
	commands["migrate"] = func(args []string) error {
		cfg, err := loadConfig("migrate", args)
		if err != nil {
			return err
		}
		if cfg.DB.URL == "" {
			return errors.New("db.url is not set (GENIAM_DB_URL or --db.url); make run migrates its own database")
		}
		ctx := context.Background()
		st, err := store.Connect(ctx, cfg.DB.URL, 0)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.Migrate(ctx); err != nil {
			return err
		}
		applied, err := st.AppliedMigrations(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("applied migrations: %s\n", strings.Join(applied, ", "))
		return nil
	}
}

// loadConfig parses --config and the per-key flags of a command.
func loadConfig(name string, args []string) (*config.Config, error) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	file := fs.String("config", "", "YAML configuration file")
	config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return config.Load(*file, fs)
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// serveHooks is what a command (serve, dev) or a test adds to a running
// aggregate; every field is optional.
type serveHooks struct {
	// reread reads the configuration again as the command read it, for
	// SIGHUP to reload the operator policy; nil: SIGHUP reloads the roots only.
	reread           func() (*config.Config, error)
	afterMigrate     func(ctx context.Context, st *store.Store) error // e.g. seed the demo inventory
	ready            func(addr net.Addr)                              // called once the listener is bound
	consoleReady     func(addr net.Addr)                              // called once the console's listener is bound
	clock            func() time.Time                                 // the aggregate's clock; nil is time.Now (tests replay dated credentials)
	allowLocalImages bool                                             // image locations may be file paths (make run's demo image)
}

func (h *serveHooks) aggregateClock() func() time.Time {
	if h == nil {
		return nil
	}
	return h.clock
}

// serve runs the aggregate until ctx ends. On SIGHUP it reloads the trusted
// roots and, with hooks.reread, the operator policy of the configuration it
// returns.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks *serveHooks) error {
	if cfg.DB.URL == "" {
		return errors.New("db.url is not set: point it at PostgreSQL (or use make run, which starts one)")
	}
	for k, v := range map[string]string{"tls.cert": cfg.TLS.Cert, "tls.key": cfg.TLS.Key, "tls.trusted_roots": cfg.TLS.TrustedRoots} {
		if v == "" {
			return fmt.Errorf("%s is not set", k)
		}
	}
	for _, d := range cfg.Deprecated() {
		log.Warn("configuration: " + d)
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return fmt.Errorf("aggregate certificate: %w", err)
	}
	// One set of roots, loaded by one rule, for TLS and the credential
	// checks: the TLS edge reads it from the verifier.
	roots, problems, err := credentials.LoadTrustRoots(cfg.TLS.TrustedRoots)
	if err != nil {
		return fmt.Errorf("trusted roots: %w", err)
	}
	for _, p := range problems {
		log.Warn("trusted roots: skipped", "problem", p)
	}
	roots.Legacy = cfg.TLS.LegacySHA1
	verifier := credentials.NewVerifier(roots, credentials.Options{})

	st, err := store.Connect(ctx, cfg.DB.URL, cfg.DB.MaxConns)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if hooks != nil && hooks.afterMigrate != nil {
		if err := hooks.afterMigrate(ctx, st); err != nil {
			return err
		}
	}
	st.ViewMaxAge = cfg.Cache.Nodes
	ops := newOps(cfg, log, st, verifier) // ops.go: metrics, audit trail, operator policy
	defer ops.close()
	opsPolicy, err := ops.policy(cfg.Operations, st)
	if err != nil {
		return err
	}

	rs, err := rspec.New(rspec.Config{AMURN: cfg.AMURN, MaxNodes: cfg.Limits.MaxNodes, MaxLinks: cfg.Limits.MaxLinks, AllowLocalImages: hooks != nil && hooks.allowLocalImages,
		SliverLimits: cfg.SliverLimits.ByType(), IdleStop: cfg.Provisioning.IdleStop, IdleWarn: cfg.Provisioning.IdleWarn})
	if err != nil {
		return err
	}
	prov, err := newProvisioner(cfg, st, rs, log) // provision.go; nil when agents.* are unset
	if err != nil {
		return fmt.Errorf("provisioning: %w", err)
	}
	agg := am.NewAggregate(am.AggregateConfig{
		URN: cfg.AMURN, URL: cfg.PublicURL(),
		AllocationHold: cfg.Lifecycle.AllocationHold, ProvisionedLifetime: cfg.Lifecycle.ProvisionDefault,
		MaxLease: cfg.Lifecycle.MaxLease, Placement: am.PlacementPolicy(cfg.Placement.Policy), Ops: opsPolicy,
		MaxLinks:    cfg.Limits.MaxLinks,
		Provisioner: asProvisioner(prov),
		AdCacheTTL:  cfg.Cache.Advertisement,
		MaxBooking:  cfg.Reservations.MaxLength, MaxBookAhead: cfg.Reservations.MaxAhead,
		MaxBookedPerNode: cfg.Reservations.MaxPerNode,
		Auditor:          ops, // the gate audits /data downloads, console views and refusals with it
		Operators:        cfg.OperatorURNs(),
	}, st, verifier, rs, hooks.aggregateClock())
	if prov != nil {
		prov.RegisterMetrics(ops.Registry) // jobs by outcome, reconciliation, process lock
		prov.UseGate(agg.Gate())           // whose keys the agents get; /data downloads
		go prov.Run(ctx)
	}
	reaper := agg.NewReaper(cfg.Lifecycle.ReaperInterval)
	reaper.Store = reaperStore{reaper.Store, ops}
	reaper.Log = log
	go reaper.Run(ctx)

	handler := geniapi.NewHandler(agg, geniapi.HandlerOptions{MaxBodyBytes: cfg.Limits.MaxBody, Logger: log, Auditor: ops})
	// The request timeout bounds AM API calls; /data downloads stream for as long as they need.
	apiTLS := geniapi.ServerTLSConfig(cert, verifier, cfg.TLS.LegacySHA1, log)
	// POST /data/<sliver>.tar, on the AM listener and behind the console's
	// download form alike (nil without a provisioner).
	var data http.Handler
	if prov != nil {
		data = prov.DataHandler()
	}
	srv := geniapi.NewServer(cfg.Listen, withData(withRequestTimeout(handler, cfg.Limits.RequestTimeout), data), apiTLS)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup { // each reload is loud on failure
			_ = ops.reloadRoots(verifier, cfg.TLS.TrustedRoots, cfg.TLS.LegacySHA1)
			if hooks == nil || hooks.reread == nil || ops.reloadPolicy(hooks.reread, cfg, agg.Gate()) != nil || prov == nil {
				continue
			}
			// Users the new policy refuses lose their SSH keys now.
			if err := prov.WithdrawKeys(ctx); err != nil && ctx.Err() == nil {
				log.Warn("cannot check whose SSH keys the agents hold after the policy reload", "err", err)
			}
		}
	}()
	go watchReloads(ctx, st, hup, reloadPollInterval, log)
	if cfg.Operations.Listen != "" {
		if _, err := ops.serveOps(ctx, cfg.Operations.Listen); err != nil {
			return err
		}
	}
	if cfg.Console.Listen != "" {
		addr, err := serveConsole(ctx, cfg, st, agg.Gate(), data, apiTLS, log) // console.go
		if err != nil {
			return err
		}
		if hooks != nil && hooks.consoleReady != nil {
			hooks.consoleReady(addr)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	ops.ready.Store(true)
	log.Info("geniam serving AM API v3", "url", cfg.PublicURL(), "urn", cfg.AMURN, "listen", ln.Addr().String())
	if hooks != nil && hooks.ready != nil {
		hooks.ready(ln.Addr())
	}
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// reloadPollInterval is how often a process looks for a reload request
// made through the database (admin reload).
const reloadPollInterval = 2 * time.Second

// watchReloads turns a reload request in the database (admin reload, the
// settings row SettingReload) into a SIGHUP of this process: one command
// reloads every aggregate process of a deployment, wherever they run. The
// request present at start is not one for this process: it has just read
// its configuration. A database that cannot be read is asked again at the
// next tick.
func watchReloads(ctx context.Context, st *store.Store, hup chan<- os.Signal, every time.Duration, log *slog.Logger) {
	seen, err := st.Setting(ctx, store.SettingReload)
	known := err == nil
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v, err := st.Setting(ctx, store.SettingReload)
		if err != nil {
			continue
		}
		if known && v != seen && v != "" {
			log.Info("reload requested through the database (admin reload)", "request", v)
			select {
			case hup <- syscall.SIGHUP:
			default: // a reload is already pending: it reads the newest files
			}
		}
		seen, known = v, true
	}
}
