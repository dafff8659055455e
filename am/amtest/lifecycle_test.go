package amtest

import (
	"testing"

	"github.com/geniam/geniam/am"
)

// TestLifecycleInMemory: the lifecycle rules without PostgreSQL.
func TestLifecycleInMemory(t *testing.T) {
	Lifecycle(t, func(t *testing.T, nodes []am.Node) am.Store { return NewStore(nodes...) })
}
