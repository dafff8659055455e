// Package pgcluster creates, starts and stops a private PostgreSQL cluster
// with the system's initdb and pg_ctl. `make run` keeps one under ./var; the
// tests start a throwaway one. When the process runs as root (CI, containers)
// the cluster is run as the unprivileged "postgres" user, because PostgreSQL
// refuses to run as root.
package pgcluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cluster is a PostgreSQL data directory served on a unix socket in SocketDir
// and, when Port > 0, on 127.0.0.1:Port.
//
// Nothing trusts a local user on TCP: `make run` is started on shared lab
// machines, where any user can reach 127.0.0.1, and the superuser can run
// programs as postgres (COPY ... TO PROGRAM). TCP needs the superuser's
// password (scram-sha-256), generated at Init and kept in PasswordFile
// (0600, the owner's only). The unix socket trusts its callers, but it lives
// in SocketDir, mode 0700, which only the cluster's owner (and root) can
// enter.
type Cluster struct {
	Dir       string // data directory
	SocketDir string // unix socket directory (0700)
	Port      int    // TCP port on 127.0.0.1 (also the socket's number)
	// Password is the superuser's, read from PasswordFile.
	Password     string
	PasswordFile string
	bin          string
	cred         *syscall.Credential
}

// ErrNoPostgres says the PostgreSQL server binaries are not installed.
var ErrNoPostgres = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package 'postgresql'")

// BinDir finds the directory of initdb and pg_ctl: $GENIAM_PG_BIN, then PATH,
// then the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if d := os.Getenv("GENIAM_PG_BIN"); d != "" {
		return d, nil
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if _, err := exec.LookPath("initdb"); err == nil {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				return filepath.Dir(r), nil
			}
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// New describes a cluster in dir (created by Init if absent). port 0 picks a free one.
func New(dir string, port int) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Dir: filepath.Join(abs, "data"), SocketDir: filepath.Join(abs, "sock"), Port: port, bin: bin,
		PasswordFile: filepath.Join(abs, "password")}
	if b, err := os.ReadFile(c.PasswordFile); err == nil {
		c.Password = strings.TrimSpace(string(b))
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root and there is no 'postgres' user to run PostgreSQL as (install the Debian package 'postgresql'): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return c, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Initialized reports whether the data directory holds a cluster.
func (c *Cluster) Initialized() bool {
	_, err := os.Stat(filepath.Join(c.Dir, "PG_VERSION"))
	return err == nil
}

// Init runs initdb: a generated superuser password for TCP (scram-sha-256),
// trust only on the unix socket in its private directory.
func (c *Cluster) Init() error {
	for _, d := range []string{filepath.Dir(c.Dir), c.Dir, c.SocketDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := c.chown(d); err != nil {
			return err
		}
	}
	if err := c.reachable(filepath.Dir(c.Dir)); err != nil {
		return err
	}
	if err := c.newPassword(); err != nil {
		return err
	}
	// initdb reads the password from a file the postgres user can read;
	// it is removed as soon as initdb is done.
	pw := filepath.Join(filepath.Dir(c.Dir), ".initdb-pw")
	if err := os.WriteFile(pw, []byte(c.Password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pw)
	if err := c.chown(pw); err != nil {
		return err
	}
	out, err := c.run("initdb", "-D", c.Dir, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
		"--pwfile="+pw, "-E", "UTF8", "--no-sync")
	if err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out)
	}
	return nil
}

func (c *Cluster) newPassword() error {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	c.Password = hex.EncodeToString(b)
	return os.WriteFile(c.PasswordFile, []byte(c.Password+"\n"), 0o600)
}

// Secure brings a cluster made by an older version (trust on TCP, no
// password) to the present rules: it sets a generated password through the
// unix socket, makes every host line of pg_hba.conf ask for scram-sha-256,
// closes the socket directory to other users and reloads the server. A
// cluster that already has its password file is left as it is. The server
// must be running.
func (c *Cluster) Secure() error {
	if err := os.Chmod(c.SocketDir, 0o700); err != nil {
		return err
	}
	if c.Password != "" {
		return nil
	}
	if err := c.newPassword(); err != nil {
		return err
	}
	cmd := exec.Command(c.psqlPath(), "-h", c.SocketDir, "-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1")
	cmd.Stdin = strings.NewReader("SET password_encryption = 'scram-sha-256';\nALTER ROLE postgres PASSWORD '" + c.Password + "';\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(c.PasswordFile)
		c.Password = ""
		return fmt.Errorf("setting the superuser password: %v: %s", err, out)
	}
	hba := filepath.Join(c.Dir, "pg_hba.conf")
	b, err := os.ReadFile(hba)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 5 && (f[0] == "host" || f[0] == "hostssl" || f[0] == "hostnossl") && f[len(f)-1] == "trust" {
			lines[i] = strings.Join(append(f[:len(f)-1], "scram-sha-256"), "\t")
		}
	}
	if err := os.WriteFile(hba, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		return err
	}
	if err := c.chown(hba); err != nil {
		return err
	}
	if out, err := c.run("pg_ctl", "-D", c.Dir, "reload"); err != nil {
		return fmt.Errorf("pg_ctl reload: %v: %s", err, out)
	}
	return nil
}

// reachable lets the postgres user traverse to dir when we run as root: it
// adds search permission (o+x, never read) to ancestors that lack it, such as
// a 0700 temporary directory.
func (c *Cluster) reachable(dir string) error {
	if c.cred == nil {
		return nil
	}
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("let the postgres user reach %s: %w", dir, err)
			}
		}
	}
	return nil
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() error {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off -c max_connections=200 -c shared_buffers=64MB",
		c.Port, c.SocketDir)
	if os.Getenv("GENIAM_PG_FSYNC") == "on" {
		opts = strings.Replace(opts, "-c fsync=off ", "", 1)
	}
	out, err := c.run("pg_ctl", "-D", c.Dir, "-l", filepath.Join(c.Dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s (see %s)", err, out, filepath.Join(c.Dir, "server.log"))
	}
	return nil
}

// Stop stops the server (fast mode) and waits.
func (c *Cluster) Stop() error {
	out, err := c.run("pg_ctl", "-D", c.Dir, "-m", "fast", "-w", "-t", "60", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Running reports whether the server of the data directory is up.
func (c *Cluster) Running() bool {
	_, err := c.run("pg_ctl", "-D", c.Dir, "status")
	return err == nil
}

// URL is a connection URL for database db over TCP on loopback.
func (c *Cluster) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", c.Password), Host: "127.0.0.1:" + strconv.Itoa(c.Port), Path: "/" + db}
	u.RawQuery = "sslmode=disable"
	return u.String()
}

// Psql runs psql against database db with the given arguments.
func (c *Cluster) Psql(db string, args ...string) ([]byte, error) {
	cmd := exec.Command(c.psqlPath(), append([]string{c.URL(db), "-v", "ON_ERROR_STOP=1", "-X", "-q"}, args...)...)
	return cmd.CombinedOutput()
}

func (c *Cluster) psqlPath() string {
	psql := filepath.Join(c.bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	return psql
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
		return out, err
	case <-time.After(2 * time.Minute):
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		return nil, fmt.Errorf("%s timed out", name)
	}
}
