package node

import (
	"compress/gzip"
	"io"
	"net/http"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/agent"
)

// MaxRequestBody bounds every request body the agent reads (JSON).
const MaxRequestBody = 2 << 20

// refuseLargeBody answers 413 naming the limit if the request announces a
// body over max, and reports whether it did.
func refuseLargeBody(w http.ResponseWriter, r *http.Request, max int64, answer func(error)) bool {
	if r.ContentLength <= max {
		return false
	}
	w.Header().Set("Connection", "close")
	answer(am.Errorf(am.TooBig, "request body of %d bytes is larger than the limit of %d bytes", r.ContentLength, max))
	agent.DrainRefusedBody(w, r.Body)
	return true
}

// compressedFor gzips the /data tar on the wire when the client accepts it
// (the aggregate does, and keeps archives compressed): long runs of zeros
// and text shrink many times over. gzip (compress/gzip at BestSpeed) because
// every tool reads it and it needs no new dependency. finish flushes the
// compressor.
func compressedFor(r *http.Request, w http.ResponseWriter, out io.Writer) (io.Writer, func() error) {
	if !agent.AcceptsGzip(r) {
		return out, func() error { return nil }
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	return zw, zw.Close
}
