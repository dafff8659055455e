// Package expnettest builds, for tests, several "hosts" on this machine: each
// a network namespace with an experiment interface, all joined by veth pairs
// to one "switch" bridge in a namespace of its own. Only addresses inside
// these namespaces are used (192.168.77.0/24 on the switch), so nothing
// reaches the machine's own networks. It also builds the netprog test image
// (FROM scratch, a static Go binary) that measures links from inside the
// containers. Everything is removed in t.Cleanup, also when the test fails.
package expnettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/geniam/geniam/am/agent/imagetest"
)

// Host is one namespace "host".
type Host struct {
	NS        string // namespace name (ip netns)
	NSPath    string // /run/netns/<NS>
	Interface string // its experiment interface
	Address   string // its address on the switch
}

// Why returns why the machine cannot run link tests ("" when it can): they
// need root (namespaces, devices), ip(8) and the kernel's bridge, veth and
// vxlan support.
func Why() string {
	if runtime.GOOS != "linux" {
		return "links need Linux"
	}
	if os.Geteuid() != 0 {
		return "link tests need root (network namespaces)"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip(8) (apt-get install iproute2)"
	}
	ns := "gxprobe" + RandHex(3)
	defer exec.Command("ip", "netns", "del", ns).Run()
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "add", "b0", "type", "bridge"},
		{"-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"-n", ns, "link", "add", "x0", "type", "vxlan", "id", "1", "dstport", "4789", "dev", "v0"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Sprintf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return ""
}

// HasNetem reports whether the kernel offers netem (latency, loss).
func HasNetem() bool {
	ns := "gxprobe" + RandHex(3)
	defer exec.Command("ip", "netns", "del", ns).Run()
	if exec.Command("ip", "netns", "add", ns).Run() != nil {
		return false
	}
	if exec.Command("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1").Run() != nil {
		return false
	}
	return exec.Command("tc", "-n", ns, "qdisc", "add", "dev", "v0", "root", "netem", "delay", "1ms").Run() == nil
}

// RandHex returns n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// IP runs ip(8) and fails the test on error.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NewHosts makes n hosts on a fresh switch.
func NewHosts(t testing.TB, n int) []Host {
	t.Helper()
	run := RandHex(3)
	sw := "gxsw" + run
	t.Cleanup(func() { exec.Command("ip", "netns", "del", sw).Run() })
	IP(t, "netns", "add", sw)
	IP(t, "-n", sw, "link", "add", "sw", "type", "bridge")
	IP(t, "-n", sw, "link", "set", "sw", "up")
	var hosts []Host
	for i := 0; i < n; i++ {
		h := Host{NS: fmt.Sprintf("gxh%d%s", i, run), Interface: "exp0", Address: "192.168.77." + strconv.Itoa(i+1)}
		h.NSPath = "/run/netns/" + h.NS
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.NS).Run() })
		IP(t, "netns", "add", h.NS)
		port := fmt.Sprintf("p%d", i)
		IP(t, "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "exp0", "netns", h.NS)
		IP(t, "-n", sw, "link", "set", port, "master", "sw", "up")
		IP(t, "-n", h.NS, "addr", "add", h.Address+"/24", "dev", "exp0")
		IP(t, "-n", h.NS, "link", "set", "exp0", "up")
		IP(t, "-n", h.NS, "link", "set", "lo", "up")
		hosts = append(hosts, h)
	}
	return hosts
}

// Links lists the names of the link devices (gbr*, gvx*, gh*) in a host.
func (h Host) Links(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(IP(t, "-n", h.NS, "-o", "link", "show"), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, "gbr") || strings.HasPrefix(name, "gvx") || strings.HasPrefix(name, "gh") {
			out = append(out, name)
		}
	}
	return out
}

// Image is the netprog image saved as a `docker save` tar.
type Image struct {
	Tar, SHA256, ID string
}

// BuildImage builds the netprog image, saves it and removes it from the
// engine (the agent loads it again); the image is removed at cleanup.
func BuildImage(t testing.TB) Image {
	t.Helper()
	dir := t.TempDir()
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "testdata", "netprog")
	if err := imagetest.GoStatic(src, ".", filepath.Join(dir, "netprog")); err != nil {
		t.Fatal(err)
	}
	df := "FROM scratch\nCOPY netprog /netprog\nENTRYPOINT [\"/netprog\"]\nCMD [\"-serve\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	saved, err := imagetest.Save(dir, "geniam.test/netprog:"+RandHex(4), filepath.Join(dir, "netprog.tar"))
	if saved.ID != "" {
		t.Cleanup(func() { _ = imagetest.Docker("rmi", "-f", saved.ID) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return Image{Tar: saved.Tar, SHA256: saved.SHA256, ID: saved.ID}
}

// Exec runs netprog in a container with args and returns its output line.
func Exec(ctx context.Context, container string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", container, "/netprog"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Reach reports whether container from reaches container to at addr: one
// UDP round trip answered by to (a container's hostname is the first 12
// characters of its id), not by another container with the same address.
func Reach(ctx context.Context, from, to, addr string) bool {
	out, _ := Exec(ctx, from, "-reach", addr, "-expect", to[:min(12, len(to))], "-timeout", "500ms")
	return out == "ok"
}

// Ping returns the median UDP round trip from a container to addr, in ms.
func Ping(ctx context.Context, from, addr string, n int) (float64, error) {
	out, err := Exec(ctx, from, "-ping", addr, "-n", strconv.Itoa(n))
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	var lo, med, hi float64
	var lost int
	if _, err := fmt.Sscanf(out, "rtt_ms %f %f %f lost %d", &lo, &med, &hi, &lost); err != nil {
		return 0, fmt.Errorf("ping output %q: %v", out, err)
	}
	return med, nil
}

// Throughput returns the TCP rate from a container to addr, Mbit/s.
func Throughput(ctx context.Context, from, addr string, secs float64) (float64, error) {
	out, err := Exec(ctx, from, "-tput", addr, "-secs", strconv.FormatFloat(secs, 'f', -1, 64))
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	var mbps float64
	if _, err := fmt.Sscanf(out, "mbps %f", &mbps); err != nil {
		return 0, fmt.Errorf("throughput output %q: %v", out, err)
	}
	return mbps, nil
}
