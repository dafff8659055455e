// Package pgtest gives tests a real, empty PostgreSQL database.
//
// With GENIAM_TEST_DATABASE_URL set (make test sets it to a throwaway cluster
// it starts once for the whole run), each NewDatabase creates a fresh database
// on that server. Without it, the first call starts a private cluster in a
// temporary directory, which Main stops when the package's tests end.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/store/pgcluster"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	once    sync.Once
	server  string // admin URL (database "postgres")
	cluster *pgcluster.Cluster
	tmpDir  string
	initErr error
)

// Main runs the package's tests and stops the private cluster, if one was
// started. Use it from TestMain: func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the private cluster, if this process started one.
func Stop() {
	if cluster != nil {
		_ = cluster.Stop()
		cluster = nil
		_ = os.RemoveAll(tmpDir)
	}
}

func setup() {
	if u := os.Getenv("GENIAM_TEST_DATABASE_URL"); u != "" {
		server = u
		return
	}
	tmpDir, initErr = os.MkdirTemp("", "geniam-pgtest-")
	if initErr != nil {
		return
	}
	c, err := pgcluster.New(tmpDir, 0)
	if err != nil {
		initErr = err
		return
	}
	if initErr = c.Init(); initErr != nil {
		return
	}
	if initErr = c.Start(); initErr != nil {
		return
	}
	cluster = c
	server = c.URL("postgres")
}

// Cluster returns the private cluster this process started (nil when the
// tests use GENIAM_TEST_DATABASE_URL). Fault tests use it to restart PostgreSQL.
func Cluster() *pgcluster.Cluster { return cluster }

// NewDatabase creates an empty database and returns its URL; it is dropped
// when the test ends. The test fails if PostgreSQL cannot be had.
func NewDatabase(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if initErr != nil {
		t.Fatalf("pgtest: no PostgreSQL: %v", initErr)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("pgtest: connect %s: %v", redact(server), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, server)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("pgtest: bad server URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Pool opens a connection pool on dbURL (a database of NewDatabase, a
// Proxy's URL), closed when the test ends. It does not connect before its
// first query, so a URL where nothing answers gives a pool all the same.
func Pool(tb testing.TB, dbURL string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		tb.Fatalf("pgtest: pool on %s: %v", redact(dbURL), err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
