package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWithRequestTimeout(t *testing.T) {
	// A handler that waits for its context, as a call waiting on a database
	// that does not answer does.
	waiting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			w.WriteHeader(http.StatusTeapot)
		case <-time.After(10 * time.Second):
		}
	})
	rec := httptest.NewRecorder()
	start := time.Now()
	withRequestTimeout(waiting, 50*time.Millisecond).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusTeapot || time.Since(start) > 5*time.Second {
		t.Errorf("status %d after %s: the handler's context did not end at the timeout", rec.Code, time.Since(start))
	}

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Deadline(); ok {
			t.Error("timeout 0 set a deadline")
		}
	})
	withRequestTimeout(h, 0).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", nil))
}
