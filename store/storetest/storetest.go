// Package storetest gives a test the aggregate's store on a fresh, migrated
// PostgreSQL database (store/pgtest's), closed when the test ends: the one
// way the tests of the store, the provisioner and the commands open it.
package storetest

import (
	"context"
	"testing"

	"github.com/geniam/geniam/store"
	"github.com/geniam/geniam/store/pgtest"
)

// Open opens a store on a new database and returns it with the database's
// URL (for a second process or pool on the same database).
func Open(tb testing.TB) (*store.Store, string) {
	tb.Helper()
	url := pgtest.NewDatabase(tb)
	return OpenURL(tb, url), url
}

// OpenURL opens a store on the database at url, migrated, with a pool of its
// own: a second aggregate process on the database of Open.
func OpenURL(tb testing.TB, url string) *store.Store {
	tb.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	return st
}
