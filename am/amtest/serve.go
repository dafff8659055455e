package amtest

import (
	"context"
	"net"
	"net/http"
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
