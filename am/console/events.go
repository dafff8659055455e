package console

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Live updates: one goroutine per console (not per browser) reads the
// store's change mark every Poll while at least one page listens, and tells
// every listener when it moved. The event carries no data: each page fetches
// itself again, through the same access checks as any page view.

// maxListeners bounds the open /events streams (each holds a connection),
// maxPerViewer those of one certificate or of the token, so that one viewer
// cannot take them all.
const maxListeners, maxPerViewer = 200, 16

type hub struct {
	src  Source
	poll time.Duration
	log  *slog.Logger

	mu        sync.Mutex
	listeners map[chan string]string // to the viewer's key
	perViewer map[string]int
	wake      chan struct{}
}

func newHub(src Source, poll time.Duration, log *slog.Logger) *hub {
	return &hub{src: src, poll: poll, log: log, listeners: map[chan string]string{}, perViewer: map[string]int{}, wake: make(chan struct{}, 1)}
}

func (h *hub) subscribe(viewer string) (chan string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.listeners) >= maxListeners || h.perViewer[viewer] >= maxPerViewer {
		return nil, false
	}
	ch := make(chan string, 1)
	h.listeners[ch] = viewer
	h.perViewer[viewer]++
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return ch, true
}

func (h *hub) unsubscribe(ch chan string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.listeners[ch]
	delete(h.listeners, ch)
	if h.perViewer[v]--; h.perViewer[v] <= 0 {
		delete(h.perViewer, v)
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.listeners)
}

func (h *hub) run(ctx context.Context) {
	var last string
	failing := false // logged once per outage, not at every poll
	t := time.NewTicker(h.poll)
	defer t.Stop()
	for {
		if h.count() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		mark, err := h.src.ChangeMark(qctx)
		cancel()
		if err != nil {
			if !failing {
				h.log.Warn("console: cannot read the change mark; open pages stop updating until it can", "err", err)
			}
			failing = true
			continue
		}
		if failing {
			h.log.Info("console: change mark readable again")
			failing = false
		}
		if mark == last {
			continue
		}
		last = mark
		h.mu.Lock()
		for ch := range h.listeners {
			select {
			case ch <- mark:
			default: // it has one pending already; one refresh covers both
			}
		}
		h.mu.Unlock()
	}
}

// events is GET /events: a server-sent event "change" whenever the store
// changed, and a comment every 15 s so proxies keep the stream open.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	v := c.signedIn(w, r)
	if v == nil {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	key := v.User
	if key == "" {
		key = "(operator token)"
	}
	ch, ok := c.hub.subscribe(key)
	if !ok {
		http.Error(w, "too many open console pages; close some (pages still work, without live updates)", http.StatusServiceUnavailable)
		return
	}
	defer c.hub.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// A change between the page's render and this subscription would be
	// missed: the page refreshes once now.
	fmt.Fprint(w, "retry: 3000\n\nevent: change\ndata: \n\n")
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case <-ch:
			fmt.Fprint(w, "event: change\ndata: \n\n")
		}
		fl.Flush()
	}
}
