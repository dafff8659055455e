package docker_test

import (
	"testing"

	"github.com/geniam/geniam/am/agent/docker"
	"github.com/geniam/geniam/am/agent/runtimetest"
)

// TestConformance runs the suite the in-memory runtime also passes against
// the real engine.
func TestConformance(t *testing.T) {
	runtimetest.Run(t, docker.NewRuntime(""), runtimetest.ProgImage(t))
}
