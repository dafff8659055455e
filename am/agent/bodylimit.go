package agent

import (
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
)

// MaxRequestBody bounds every request body the agent reads (JSON).
const MaxRequestBody = 2 << 20

// An answer to an oversized body is useless if the connection is reset
// before the client reads it, which is what happens when a server closes a
// socket with unread data in it while the client is still sending (curl
// reported "Connection reset by peer" and never saw the 413). So a body
// whose announced length is over the limit is refused before any of it is
// read (a client that sent Expect: 100-continue then never sends it), and
// after any refusal for size the answer is flushed and up to
// refusedBodyDrain more bytes are read and dropped, within
// refusedDrainTime, before the connection closes.
const (
	refusedBodyDrain = 64 << 20
	refusedDrainTime = 10 * time.Second
)

// refuseLargeBody answers 413 naming the limit if the request announces a
// body over max, and reports whether it did.
func refuseLargeBody(w http.ResponseWriter, r *http.Request, max int64, answer func(error)) bool {
	if r.ContentLength <= max {
		return false
	}
	w.Header().Set("Connection", "close")
	answer(am.Errorf(am.TooBig, "request body of %d bytes is larger than the limit of %d bytes", r.ContentLength, max))
	DrainRefusedBody(w, r.Body)
	return true
}

// DrainRefusedBody flushes the answer already written to w and then reads
// and drops what the client still sends of body, up to a bound, so that the
// client can read the answer before the connection closes.
func DrainRefusedBody(w http.ResponseWriter, body io.Reader) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(refusedDrainTime))
	_, _ = io.CopyN(io.Discard, body, refusedBodyDrain)
}

// compressedFor gzips the /data tar on the wire when the client accepts it
// (the aggregate does, and keeps archives compressed): long runs of zeros
// and text shrink many times over. gzip (compress/gzip at BestSpeed) because
// every tool reads it and it needs no new dependency. finish flushes the
// compressor.
func compressedFor(r *http.Request, w http.ResponseWriter, out io.Writer) (io.Writer, func() error) {
	if !AcceptsGzip(r) {
		return out, func() error { return nil }
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	return zw, zw.Close
}

// AcceptsGzip reports whether the request's Accept-Encoding lists gzip
// (without q=0).
func AcceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
