package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/devenv"
	"github.com/geniam/geniam/store"
	"github.com/spf13/pflag"
)

func init() { commands["dev"] = runDev }

// runDev is `make run`: everything a newcomer needs on one machine.
func runDev(args []string) error {
	fs := pflag.NewFlagSet("dev", pflag.ContinueOnError)
	varDir := fs.String("var", "./var", "directory for the dev cluster, PKI and configuration")
	chListen := fs.String("ch-listen", "127.0.0.1:8000", "address of the dev clearinghouse")
	inventory := fs.Int("inventory", 3, "make the demo inventory at least this many nodes (extra ones, for benchmarks, have no agent)")
	file := fs.String("config", "", "YAML configuration file (optional)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) of the whole run to this file (make bench)")
	config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir, err := filepath.Abs(*varDir)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*file, fs)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log)
	if cfg.DB.URL == "" {
		cluster, url, err := devenv.Database(ctx, filepath.Join(dir, "pg"))
		if err != nil {
			return fmt.Errorf("dev PostgreSQL: %w", err)
		}
		log.Info("dev PostgreSQL running", "data", cluster.Dir, "port", cluster.Port,
			"stop", "pg_ctl -D "+cluster.Dir+" stop (as user postgres when root)")
		cfg.DB.URL = url
	}
	pki, err := devenv.EnsurePKI(filepath.Join(dir, "pki"))
	if err != nil {
		return err
	}
	if cfg.TLS.Cert == "" {
		cfg.TLS.Cert, cfg.TLS.Key = pki.File("am")
	}
	if cfg.TLS.TrustedRoots == "" {
		cfg.TLS.TrustedRoots = pki.TrustedRoots
	}
	if cfg.AMURN != devenv.AMURN && !fs.Changed("am_urn") && os.Getenv("GENIAM_AM_URN") == "" && *file == "" {
		cfg.AMURN = devenv.AMURN
	}
	cfg.VarDir = dir
	devOpsListen(cfg, fs.Changed("operations.listen") || os.Getenv("GENIAM_OPERATIONS_LISTEN") != "" || *file != "", log) // ops.go
	devConsole(cfg, fs.Changed("console.listen") || os.Getenv("GENIAM_CONSOLE_LISTEN") != "" || *file != "", log)         // console.go
	chURL := "https://" + *chListen + "/"
	omniConfig := filepath.Join(dir, "dev", "omni_config")
	if err := devenv.WriteOmniConfig(omniConfig, pki, cfg.PublicURL(), chURL); err != nil {
		return err
	}
	demo := startDevAgents(ctx, dir, pki, cfg, log) // provision.go: agents and demo image when Docker is there
	if err := writeEffectiveConfig(filepath.Join(dir, "geniam.yaml"), cfg); err != nil {
		return err
	}
	if err := devenv.ServeCH(ctx, *chListen, pki, cfg.AMURN, cfg.PublicURL(), log); err != nil {
		return err
	}
	userCert, userKey := pki.File("alice")
	var consoleAddr string
	hooks := &serveHooks{
		allowLocalImages: true,
		afterMigrate: func(ctx context.Context, st *store.Store) error {
			return st.SeedDemoInventory(ctx, devenv.Authority, *inventory)
		},
		consoleReady: func(addr net.Addr) { consoleAddr = addr.String() },
		ready: func(addr net.Addr) {
			fmt.Printf(`
geniam is serving the AM API v3 at %s
  aggregate URN      %s
  dev clearinghouse  %s (omni's "gcf" framework)
  experimenter       %s
                     cert %s
                     key  %s
  configuration      %s (what this run uses; edit it and run: ./bin/geni-am serve --config %s)
  omni_config        %s (for geni and omni)

Check it with geni (bin/geni; elsewhere: go install github.com/geniam/geniam/cmd/geni@latest):
  geni -c %s -a geniam getversion
  geni -c %s -a geniam listresources
`, cfg.PublicURL(), cfg.AMURN, chURL, devenv.UserURN, userCert, userKey,
				filepath.Join(dir, "geniam.yaml"), filepath.Join(dir, "geniam.yaml"), omniConfig,
				omniConfig, omniConfig)
			if cfg.Console.Listen != "" {
				fmt.Printf("\nWeb console: https://%s/ (operator token %s; the dev certificate is not trusted by browsers: accept it)\n",
					consoleAddr, cfg.Console.Token)
			}
			printDemo(demo, omniConfig)
			fmt.Println("\nStop with Ctrl-C. omni works with the same omni_config (omni -c ... -V3 ...; docs/omni.md).")
		},
	}
	// SIGHUP reads the configuration again as this run read it: the --config
	// file, else the file it wrote (var/geniam.yaml, which holds what the run
	// chose itself: database, PKI, listeners), with the same flags on top.
	hooks.reread = func() (*config.Config, error) {
		if *file != "" {
			return config.Load(*file, fs)
		}
		return config.Load(filepath.Join(dir, "geniam.yaml"), fs)
	}
	return serve(ctx, cfg, log, hooks)
}

// writeEffectiveConfig records the configuration a dev run uses, so the
// operator can read it and reuse it with `geni-am serve --config`.
func writeEffectiveConfig(path string, c *config.Config) error {
	return config.WriteYAML(path, map[string]any{
		"listen": c.Listen, "am_urn": c.AMURN, "var_dir": c.VarDir,
		"db.url": c.DB.URL, "tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key, "tls.trusted_roots": c.TLS.TrustedRoots,
		"agents.cert": c.Agents.Cert, "agents.key": c.Agents.Key, "agents.ca": c.Agents.CA,
		"operations.listen": c.Operations.Listen, "console.listen": c.Console.Listen, "console.token": c.Console.Token,
	})
}
