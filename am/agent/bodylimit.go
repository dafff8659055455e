package agent

// HTTP helpers both servers of a sliver's data use: the agent's (package
// node) and the aggregate's /data download (am/provision).

import (
	"io"
	"net/http"
	"strings"
	"time"
)

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

// DrainRefusedBody flushes the answer already written to w and then reads
// and drops what the client still sends of body, up to a bound, so that the
// client can read the answer before the connection closes.
func DrainRefusedBody(w http.ResponseWriter, body io.Reader) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(refusedDrainTime))
	_, _ = io.CopyN(io.Discard, body, refusedBodyDrain)
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
