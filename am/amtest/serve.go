package amtest

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ServeTLS serves srv, whose TLSConfig holds the certificates, on ln until
// the test ends, and then shuts it down gracefully.
func ServeTLS(tb testing.TB, srv *http.Server, ln net.Listener) {
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
}

// ListenStable listens on ip at a port below the kernel's ephemeral range,
// for a server a test stops and starts again on the same address. A port
// from ":0" is drawn from the ephemeral range, so once it is released any
// process's outgoing connection or ":0" listener can take it and hold it for
// as long as it likes; below that range only an explicit bind can.
func ListenStable(tb testing.TB, ip string) net.Listener {
	tb.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				low = n
			}
		}
	}
	base := max(1024, low-16384)
	var err error
	for range 200 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(base+rand.IntN(low-base)))); err == nil {
			return ln
		}
	}
	tb.Fatalf("no free port on %s below %d: %v", ip, low, err)
	return nil
}
