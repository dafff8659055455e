// Accept client certificates with negative serial numbers, which some
// openssl-made GENI certificates have; Go refuses them by default.
//
//go:debug x509negativeserial=1

// Command geni-nodeagent runs on every testbed node next to its Docker
// engine and carries out what the aggregate asks over mutual TLS: fetch an
// image tar, start it with a /data directory, report status, hand back
// /data, clean up. It replaces the AERPAW NodeAgent and keeps its /v1 paths.
// See docs/nodeagent.md.
//
//	geni-nodeagent -config /etc/geni-nodeagent.json
//	geni-nodeagent -example-config    (print every key at its default)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am/agent/docker"
	"github.com/geniam/geniam/am/agent/expnet"
	"github.com/geniam/geniam/am/agent/node"
	"github.com/geniam/geniam/am/agent/sshlogin"
)

// Config is the agent's configuration file (JSON).
type Config struct {
	Listen         string   `json:"listen"`           // mutual-TLS listener, default ":1887"
	Cert           string   `json:"cert"`             // the agent's certificate chain (PEM)
	Key            string   `json:"key"`              // its private key (PEM)
	ClientCA       string   `json:"client_ca"`        // CA(s) whose clients may call (the aggregate's)
	AllowedClients []string `json:"allowed_clients"`  // only these client URNs/CNs (the aggregate's); required
	AllowAnyClient bool     `json:"allow_any_client"` // serve every client of client_ca (an empty allowed_clients)
	V1PlainListen  string   `json:"v1_plain_listen"`  // optional plain-HTTP v1 listener, "host:port"

	StateDir     string `json:"state_dir"`     // default /var/local/geni-nodeagent
	DockerSocket string `json:"docker_socket"` // default /var/run/docker.sock
	Instance     string `json:"instance"`      // label value scoping this agent's containers

	DefaultNetwork  string   `json:"default_network"`  // default "none"
	AllowedNetworks []string `json:"allowed_networks"` // default [default_network]

	ContainerStore   string   `json:"container_store"`          // v1 fetchContainer base URL
	V1RequireDigest  bool     `json:"v1_require_digest"`        // refuse v1 fetches without ?sha256=
	AllowFileImages  bool     `json:"allow_file_images"`        // accept local paths as image URLs
	FileImageDirs    []string `json:"file_image_dirs"`          // ... only inside these directories
	ImageHosts       []string `json:"image_hosts"`              // only these image hosts (may be private); [] = any public host
	MaxImageBytes    int64    `json:"max_image_bytes"`          // default 20 GiB
	MaxImageUnpacked int64    `json:"max_image_unpacked_bytes"` // what the image expands to; default 4 × max_image_bytes
	FetchTimeout     Duration `json:"fetch_timeout"`            // default 30m
	MaxArchiveBytes  int64    `json:"max_archive_bytes"`        // one /data archive; default 10 GiB, negative = none

	StopGrace      Duration `json:"stop_grace"`       // default 10s
	MemoryBytes    int64    `json:"memory_bytes"`     // per-container limit; default 1 GiB, negative = none
	CPUs           float64  `json:"cpus"`             // per-container limit; default 1, negative = none
	PidsLimit      int64    `json:"pids_limit"`       // per-container limit; default 512, negative = none
	Capabilities   []string `json:"capabilities"`     // kept; all others dropped
	ReadOnlyRootfs bool     `json:"read_only_rootfs"` // image filesystem read-only (tmpfs /tmp)
	DataQuotaBytes int64    `json:"data_quota_bytes"` // size of each /data filesystem; default 10 GiB, negative = not enforced
	DataOwner      string   `json:"data_owner"`       // uid:gid owning /data; the remapped root with userns-remap
	Devices        []string `json:"devices"`          // host devices for every container

	// SSH login into the sliver containers (package agent/sshlogin).
	SSHListen  string `json:"ssh_listen"`   // e.g. ":2222"; "" turns login off
	SSHHost    string `json:"ssh_host"`     // name experimenters reach the node by; default: the aggregate uses the agent URL's host
	SSHHostKey string `json:"ssh_host_key"` // ed25519 host key, created if missing; default <state_dir>/ssh_host_ed25519_key

	IdleCheckInterval Duration `json:"idle_check_interval"` // how often containers under an idle policy are measured; default 1m

	LogLevel  string `json:"log_level"`  // debug, info (default), warn, error
	LogFormat string `json:"log_format"` // json (default) or text

	Links Links `json:"links"` // experiment links between containers
}

// Links configures the node's side of experiment links (package expnet).
type Links struct {
	Enabled   bool   `json:"enabled"`   // false: requests with links are refused (UNSUPPORTED)
	Interface string `json:"interface"` // host interface on the experiment network; "" = links within this node only
	Address   string `json:"address"`   // this node's address on it (VXLAN endpoint; the aggregate's nodes.vtep)
	Port      int    `json:"port"`      // VXLAN UDP port, default 4789
	MTU       int    `json:"mtu"`       // of container link interfaces, default 1450
	NetNS     string `json:"netns"`     // network namespace (path) holding interface and bridges; "" = the agent's
}

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func defaultConfig() Config {
	return Config{
		Listen:            ":1887",
		Cert:              "/etc/geni-nodeagent/agent-cert.pem",
		Key:               "/etc/geni-nodeagent/agent-key.pem",
		ClientCA:          "/etc/geni-nodeagent/aggregate-ca.pem",
		StateDir:          "/var/local/geni-nodeagent",
		DockerSocket:      docker.DefaultSocket,
		Instance:          "default",
		AllowedClients:    []string{},
		DefaultNetwork:    "none",
		AllowedNetworks:   []string{"none"},
		ImageHosts:        []string{},
		MaxImageBytes:     20 << 30,
		MaxImageUnpacked:  80 << 30,
		MaxArchiveBytes:   10 << 30,
		DataQuotaBytes:    10 << 30,
		FetchTimeout:      Duration(30 * time.Minute),
		StopGrace:         Duration(10 * time.Second),
		IdleCheckInterval: Duration(time.Minute),
		MemoryBytes:       node.DefaultMemoryBytes,
		CPUs:              node.DefaultNanoCPUs / 1e9,
		PidsLimit:         node.DefaultPidsLimit,
		Capabilities:      node.DefaultCapabilities,
		LogLevel:          "info",
		LogFormat:         "json",
	}
}

// loadConfig reads the file over the defaults, refusing unknown keys (a
// misspelt key must not silently fall back to a default).
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	f, err := os.Open(path)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, cfg.check()
}

func (c Config) check() error {
	if c.Cert == "" || c.Key == "" || c.ClientCA == "" {
		return errors.New("cert, key and client_ca are required: the agent only serves mutual TLS")
	}
	if len(c.AllowedClients) == 0 && !c.AllowAnyClient {
		return errors.New("allowed_clients is empty: list the aggregate's certificate URN (e.g. urn:publicid:IDN+example.org+authority+am), " +
			"or set allow_any_client to let every certificate of client_ca in, including other agents'")
	}
	if len(c.AllowedClients) > 0 && c.AllowAnyClient {
		return errors.New("allowed_clients and allow_any_client contradict each other: set one")
	}
	if c.V1PlainListen != "" {
		host, _, err := net.SplitHostPort(c.V1PlainListen)
		if err != nil || host == "" {
			return fmt.Errorf("v1_plain_listen %q must name the address to bind, e.g. 127.0.0.1:1888", c.V1PlainListen)
		}
	}
	if c.MaxImageBytes < 0 || c.MaxImageUnpacked < 0 {
		return errors.New("max_image_bytes and max_image_unpacked_bytes must not be negative")
	}
	return nil
}

func (c Config) agentConfig(log *slog.Logger) node.Config {
	return node.Config{
		StateDir:              c.StateDir,
		Instance:              c.Instance,
		DefaultNetwork:        c.DefaultNetwork,
		AllowedNetworks:       c.AllowedNetworks,
		AllowFileImages:       c.AllowFileImages,
		FileImageDirs:         c.FileImageDirs,
		ImageHosts:            c.ImageHosts,
		MaxImageBytes:         c.MaxImageBytes,
		MaxImageUnpackedBytes: c.MaxImageUnpacked,
		MaxArchiveBytes:       max(c.MaxArchiveBytes, 0),
		Capabilities:          c.Capabilities,
		ReadOnlyRootfs:        c.ReadOnlyRootfs,
		DataQuotaBytes:        max(c.DataQuotaBytes, 0),
		DataOwner:             c.DataOwner,
		FetchTimeout:          time.Duration(c.FetchTimeout),
		StopGrace:             time.Duration(c.StopGrace),
		MemoryBytes:           c.MemoryBytes,
		NanoCPUs:              nanoCPUs(c.CPUs),
		PidsLimit:             c.PidsLimit,
		Devices:               c.Devices,
		ContainerStore:        c.ContainerStore,
		V1RequireDigest:       c.V1RequireDigest,
		LoginHost:             c.SSHHost,
		IdleCheckInterval:     time.Duration(c.IdleCheckInterval),
		Logger:                log,
	}
}

// nanoCPUs converts the cpus key: negative stays "no limit" for the agent.
func nanoCPUs(cpus float64) int64 {
	if cpus < 0 {
		return -1
	}
	return int64(cpus * 1e9)
}

func newLogger(c Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if strings.EqualFold(c.LogFormat, "text") {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

func main() {
	configPath := flag.String("config", "/etc/geni-nodeagent.json", "configuration file (JSON)")
	example := flag.Bool("example-config", false, "print a configuration with every key at its default and exit")
	flag.Parse()
	if *example {
		ex := defaultConfig()
		// Not a default (the agent refuses to start without it): the form
		// of the one key every operator must set.
		ex.AllowedClients = []string{"urn:publicid:IDN+example.org+authority+am"}
		b, _ := json.MarshalIndent(ex, "", "  ")
		fmt.Println(string(b))
		return
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "geni-nodeagent:", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("geni-nodeagent: stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. If ready is not nil it receives the bound
// addresses (TLS first, then the plain v1 listener if any).
func run(ctx context.Context, cfg Config, log *slog.Logger, ready chan<- []string) error {
	tlsConf, err := node.ServerTLSConfig(cfg.Cert, cfg.Key, cfg.ClientCA)
	if err != nil {
		return err
	}
	acfg := cfg.agentConfig(log)
	if cfg.Links.Enabled {
		l := cfg.Links
		n, err := expnet.New(expnet.Config{Interface: l.Interface, Address: l.Address, Port: l.Port, MTU: l.MTU, NetNS: l.NetNS})
		if err != nil {
			return err
		}
		defer n.Close()
		acfg.Links = n
		log.Info("geni-nodeagent: experiment links enabled", "interface", l.Interface, "address", l.Address, "netns", l.NetNS,
			"shaping", n.Support().Shaping(), "transport", n.Support().Transports(), "vlan_8021q", n.Support().VLAN)
		for _, m := range n.Missing() {
			log.Warn("geni-nodeagent: links: this kernel lacks something; what needs it is not offered", "missing", m)
		}
	}
	rt := docker.NewRuntime(cfg.DockerSocket)
	var sshLn net.Listener
	if cfg.SSHListen != "" {
		if sshLn, err = net.Listen("tcp", cfg.SSHListen); err != nil {
			return fmt.Errorf("ssh_listen: %w", err)
		}
		defer sshLn.Close()
		acfg.LoginPort = sshLn.Addr().(*net.TCPAddr).Port
	}
	svc, err := node.New(acfg, rt)
	if err != nil {
		return err
	}
	defer svc.Close()
	if sshLn != nil {
		keyFile := cfg.SSHHostKey
		if keyFile == "" {
			keyFile = filepath.Join(cfg.StateDir, "ssh_host_ed25519_key")
		}
		sshSrv, err := sshlogin.New(sshlogin.Config{HostKeyFile: keyFile, Logger: log}, svc, rt)
		if err != nil {
			return err
		}
		defer sshSrv.Close()
		go func() {
			if err := sshSrv.Serve(sshLn); err != nil {
				log.Error("geni-nodeagent: ssh server stopped", "err", err)
			}
		}()
		log.Info("geni-nodeagent: serving SSH logins into containers", "addr", sshLn.Addr().String(), "host_key", sshSrv.HostKey())
	}

	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute, // request bodies are small JSON
			IdleTimeout:       2 * time.Minute,
			// No WriteTimeout: /data streams for as long as it takes.
			ErrorLog: errLog,
		}
	}
	var servers []*http.Server
	var addrs []string
	errc := make(chan error, 2)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	main := newServer(node.NewHandler(svc, node.HandlerOptions{AllowedClients: cfg.AllowedClients, Logger: log}))
	main.TLSConfig = tlsConf
	servers = append(servers, main)
	addrs = append(addrs, ln.Addr().String())
	go func() { errc <- main.ServeTLS(ln, "", "") }()
	log.Info("geni-nodeagent: serving v2 and v1 over mutual TLS", "addr", ln.Addr().String(), "instance", cfg.Instance)

	if cfg.V1PlainListen != "" {
		pln, err := net.Listen("tcp", cfg.V1PlainListen)
		if err != nil {
			main.Close()
			return err
		}
		plain := newServer(node.NewHandler(svc, node.HandlerOptions{V1Only: true, Logger: log}))
		servers = append(servers, plain)
		addrs = append(addrs, pln.Addr().String())
		go func() { errc <- plain.Serve(pln) }()
		log.Warn("geni-nodeagent: plain-HTTP v1 listener enabled (no authentication)", "addr", pln.Addr().String())
	}
	if ready != nil {
		ready <- addrs
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}
