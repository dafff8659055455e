package main

import (
	"testing"

	"github.com/geniam/geniam/store/pgtest"
)

// TestMain runs this package's tests with a shared private PostgreSQL, and
// names the operator of admin commands (tests have no login name to take).
func TestMain(m *testing.M) {
	currentAdmin = func() string { return "admin:ops" }
	pgtest.Main(m)
}
