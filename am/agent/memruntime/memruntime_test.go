package memruntime_test

import (
	"testing"

	"github.com/geniam/geniam/am/agent/memruntime"
	"github.com/geniam/geniam/am/agent/runtimetest"
)

func TestConformance(t *testing.T) {
	runtimetest.Run(t, memruntime.New(), runtimetest.FakeImage(t, runtimetest.FakeImageConfig))
}
