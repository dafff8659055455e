package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/config"
	"github.com/geniam/geniam/am/console"
	"github.com/geniam/geniam/store"
)

// serveConsole serves the web console (am/console) on console.listen until
// ctx ends: HTTPS with the AM listener's TLS configuration, except that a
// client certificate is optional (an operator may sign in with the token).
// gate is the aggregate's, which decides who sees what; data is the AM
// listener's /data handler, which the console's download form goes through.
// It returns the bound address.
func serveConsole(ctx context.Context, cfg *config.Config, st *store.Store, gate *am.Gate, data http.Handler, apiTLS *tls.Config,
	log *slog.Logger) (net.Addr, error) {
	c := console.Config{Source: st, Gate: gate, Token: cfg.Console.Token, Poll: cfg.Console.Poll, Data: data, Log: log}
	con, err := console.New(c)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Console.Listen)
	if err != nil {
		return nil, fmt.Errorf("console.listen: %w", err)
	}
	// No WriteTimeout: /events streams for as long as the page is open.
	srv := &http.Server{Handler: con, TLSConfig: console.TLSConfig(apiTLS), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go con.Run(ctx)
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("console listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close() // event streams do not end by themselves
	}()
	log.Info("web console", "url", "https://"+ln.Addr().String()+"/", "operators", len(cfg.OperatorURNs()), "token", c.Token != "")
	return ln.Addr(), nil
}

// devConsole turns the console on for make run: 127.0.0.1:9102 (or a free
// port when that is busy) with a fresh operator token, unless the
// configuration says otherwise.
func devConsole(cfg *config.Config, explicit bool, log *slog.Logger) {
	if explicit {
		return
	}
	cfg.Console.Listen = "127.0.0.1:9102"
	if ln, err := net.Listen("tcp", cfg.Console.Listen); err != nil {
		log.Warn("console port busy; using a free port instead", "wanted", cfg.Console.Listen)
		cfg.Console.Listen = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	if cfg.Console.Token == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		cfg.Console.Token = hex.EncodeToString(b)
	}
}
