package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
	pool := newPool(t, pgtest.NewDatabase(t))
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
