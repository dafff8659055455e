package expnet

import (
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent/expnet/expnettest"
)

// TestProbe checks the probe against the kernel as tc sees it: netem is
// reported exactly when `tc qdisc add ... netem` works (not on this
// project's test machine), and what is missing is named.
func TestProbe(t *testing.T) {
	if why := expnettest.Why(); why != "" {
		t.Skip("skipping: " + why)
	}
	start := time.Now()
	ls, missing, err := Probe(true, 4789)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe took %v: support %+v; missing %q", time.Since(start).Round(time.Millisecond), ls, missing)
	if !ls.Enabled || !ls.Capacity {
		t.Errorf("bridge, veth and tbf, which the link tests use, not found: %+v %q", ls, missing)
	}
	if want := expnettest.HasNetem(); ls.Netem != want {
		t.Errorf("probe says netem %v; tc says %v", ls.Netem, want)
	}
	if !ls.Netem && !containsPrefix(missing, "netem qdisc (CONFIG_NET_SCH_NETEM)") {
		t.Errorf("missing %q does not name netem", missing)
	}
	if _, missing, _ := Probe(false, 4789); !containsPrefix(missing, "vxlan: no experiment network") {
		t.Errorf("without an experiment network, missing %q does not say why there is no vxlan", missing)
	}
}

func containsPrefix(xs []string, p string) bool {
	for _, x := range xs {
		if len(x) >= len(p) && x[:len(p)] == p {
			return true
		}
	}
	return false
}
