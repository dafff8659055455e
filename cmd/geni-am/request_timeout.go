package main

import (
	"context"
	"net/http"
	"time"
)

// withRequestTimeout bounds every call by limits.request_timeout: the context
// the aggregate works under ends then, so when the database does not answer
// (a partition, a stopped server) the caller gets BUSY ("the request ran out
// of time") after that long instead of a call that hangs until the database
// is back. d <= 0 leaves calls unbounded.
func withRequestTimeout(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
