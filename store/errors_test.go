package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/store/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestCleanErrorHidesTheDatabase(t *testing.T) {
	pg := func(code, constraint string) error {
		return fmt.Errorf("exec: %w", &pgconn.PgError{Code: code, ConstraintName: constraint, Message: "secret table detail"})
	}
	cases := []struct {
		err  error
		code am.Code
	}{
		{pg(codeDeadlock, ""), am.Busy},
		{pg(codeSerialization, ""), am.Busy},
		{pg(codeExclusionViolated, "node_slots_no_overlap"), am.Busy},
		{pg(codeUniqueViolated, "other_key"), am.ServerError},
		{pg("42P01", ""), am.ServerError},
		{context.DeadlineExceeded, am.Busy},
		{errors.New("connection refused"), am.ServerError},
		{pg("57P01", ""), am.Busy}, // terminating connection due to administrator command
		{pg("08006", ""), am.Busy},
		{&pgconn.ConnectError{}, am.Busy},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), am.Busy},
		{am.Errorf(am.TooBig, "node1 is full"), am.TooBig},
	}
	for _, c := range cases {
		got := cleanError("Allocate", c.err)
		if am.CodeOf(got) != c.code {
			t.Errorf("%v: code %v, want %v", c.err, am.CodeOf(got), c.code)
		}
		msg := am.MessageOf(got)
		if msg == "" || strings.Contains(msg, "secret") || strings.Contains(msg, "refused") || strings.Contains(msg, "SQLSTATE") {
			t.Errorf("%v: caller would see %q", c.err, msg)
		}
		if c.code != am.TooBig && !errors.Is(got, c.err) {
			t.Errorf("%v: cause lost for the log", c.err)
		}
	}
}

// Two transactions that lock rows in opposite order deadlock; PostgreSQL
// aborts one, inTx runs it again, and both succeed.
func TestInTxRetriesADeadlock(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	if _, err := pool.Exec(ctx, "CREATE TABLE r (id int PRIMARY KEY, n int); INSERT INTO r VALUES (1, 0), (2, 0)"); err != nil {
		t.Fatal(err)
	}
	st := New(pool)
	var runs atomic.Int32
	ready := make(chan struct{}, 2)
	release := make(chan struct{})
	var once [2]sync.Once
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, second := 1+i, 2-i
			errs[i] = st.inTx(ctx, "test", "test", "tester", func(tx pgx.Tx) error {
				runs.Add(1)
				if _, err := tx.Exec(ctx, "SET LOCAL deadlock_timeout = '50ms'"); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "UPDATE r SET n = n + 1 WHERE id = $1", first); err != nil {
					return err
				}
				// Both hold their first row before either takes its second.
				once[i].Do(func() { ready <- struct{}{}; <-release })
				_, err := tx.Exec(ctx, "UPDATE r SET n = n + 1 WHERE id = $1", second)
				return err
			})
		}()
	}
	<-ready
	<-ready
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("tx %d: %v", i, err)
		}
	}
	if runs.Load() < 3 {
		t.Errorf("%d runs: no retry happened", runs.Load())
	}
	var total int
	_ = pool.QueryRow(ctx, "SELECT sum(n) FROM r").Scan(&total)
	if total != 4 {
		t.Errorf("sum = %d, want 4 (each tx once)", total)
	}
}

// TestUnreachableIsBusy: with PostgreSQL gone (the proxy in front of it cut)
// every kind of store call answers BUSY "the database is unreachable;
// retry", never SERVERERROR, and works again once it is back.
func TestUnreachableIsBusy(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	direct := pgtest.Pool(t, url)
	if err := Migrate(ctx, direct); err != nil {
		t.Fatal(err)
	}
	proxy, purl := pgtest.NewProxy(t, url)
	st := New(pgtest.Pool(t, purl))
	calls := map[string]func() error{
		"Inventory":        func() error { _, err := st.Inventory(ctx); return err },
		"Slivers":          func() error { _, err := st.Slivers(ctx, "urn:publicid:IDN+x+slice+s", nil); return err },
		"Expire":           func() error { _, err := st.Expire(ctx, time.Now(), 10); return err },
		"ClaimJob":         func() error { _, err := st.ClaimJob(ctx, "w", time.Second); return err },
		"Shutdown":         func() error { return st.Shutdown(ctx, "urn:publicid:IDN+x+slice+s", "a", time.Now()) },
		"SliverByURN":      func() error { _, err := st.SliverByURN(ctx, "urn:publicid:IDN+x+sliver+s"); return err },
		"InventoryVersion": func() error { _, err := st.InventoryVersion(ctx); return err },
		"Slice":            func() error { _, err := st.Slice(ctx, "urn:publicid:IDN+x+slice+s"); return err },
		"SliverSlices":     func() error { _, err := st.SliverSlices(ctx, []string{"urn:publicid:IDN+x+sliver+s"}); return err },
		"Allocate": func() error {
			_, err := st.Allocate(ctx, am.AllocateTx{SliceURN: "urn:publicid:IDN+x+slice+s", Actor: "a",
				Plan: func([]am.Node) ([]am.Sliver, error) { return nil, am.Errorf(am.TooBig, "nothing fits") }})
			return err
		},
		"Change": func() error {
			_, err := st.Change(ctx, am.ChangeTx{SliceURN: "urn:publicid:IDN+x+slice+s", Actor: "a",
				Apply: func(*am.Sliver) error { return nil }})
			return err
		},
		"LiveSlivers": func() error { _, _, err := st.LiveSlivers(ctx, "u", "p"); return err },
	}
	for name, call := range calls { // warm the pool: open connections are cut below
		if err := call(); err != nil && am.CodeOf(err) == am.ServerError {
			t.Fatalf("%s before the outage: %v", name, err)
		}
	}
	proxy.Cut()
	for round := 0; round < 3; round++ {
		for name, call := range calls {
			began := time.Now()
			err := call()
			if d := time.Since(began); d > time.Second {
				t.Errorf("%s took %s to answer during the outage", name, d)
			}
			if am.CodeOf(err) != am.Busy || !strings.Contains(am.MessageOf(err), UnreachableMsg) {
				t.Errorf("%s during the outage: %v (%s), want BUSY %q", name, err, am.CodeOf(err), UnreachableMsg)
			}
		}
	}
	proxy.Restore()
	for name, call := range calls {
		if err := call(); am.CodeOf(err) == am.Busy || am.CodeOf(err) == am.ServerError {
			t.Errorf("%s after the outage: %v", name, err)
		}
	}
}
