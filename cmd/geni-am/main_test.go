package main

import (
	"testing"

	"github.com/geniam/geniam/store/pgtest"
)

// TestMain runs this package's tests with a shared private PostgreSQL.
func TestMain(m *testing.M) { pgtest.Main(m) }
