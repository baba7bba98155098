package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"
)

// servePprof serves Go's profiling endpoints (/debug/pprof/) on addr, a
// loopback address, until ctx ends. It is off unless the operator asks for
// it with --pprof-listen: profiles reveal code paths and, through goroutine
// dumps, request details, so they are never reachable from another host.
func servePprof(ctx context.Context, addr string, logger *slog.Logger) (func(), error) {
	if err := loopbackAddr(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: loopbackHostOnly(mux), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof server stopped", "err", err)
		}
	}()
	logger.Warn("profiling endpoints on", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// loopbackAddr accepts host:port only when host is a loopback IP literal or
// "localhost".
func loopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("invalid --pprof-listen %q: %v", addr, err)
	}
	if loopbackHost(host) {
		return nil
	}
	return usagef("invalid --pprof-listen %q: want a loopback address such as 127.0.0.1:6060", addr)
}

// loopbackHost reports whether host (a name or an IP address, without a
// port) is "localhost" or a loopback address.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHostOnly answers 403 to requests whose Host is not a loopback
// address or "localhost": a web page on a DNS-rebinding name (its name
// resolved to 127.0.0.1 after the page loaded) reaches the loopback
// listener from the browser, with its own name as Host. It could read
// /debug/pprof/cmdline, which may hold a --store URL with its password,
// and goroutine dumps with request details.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "profiling endpoints answer loopback Host names only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
