package client_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/client"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/token"
)

// node is an in-process Chorus server on 127.0.0.1 that can be restarted
// on the same data directory and port.
type node struct {
	tb     testing.TB
	cfg    server.Config // kept across restarts
	dir    string
	addr   string
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startNode starts a server on dir; addr "" picks a free port.
func startNode(tb testing.TB, dir, addr string) *node {
	tb.Helper()
	return startNodeWith(tb, dir, addr, server.Config{})
}

// startNodeWith is startNode with cfg's settings (its DataDir and Logger
// are set here).
func startNodeWith(tb testing.TB, dir, addr string, cfg server.Config) *node {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.DataDir, cfg.Logger = dir, quietLogger()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatalf("server.New: %v", err)
	}
	var ln net.Listener
	for i := 0; ; i++ { // the old listener's port may take a moment to free
		ln, err = net.Listen("tcp", addr)
		if err == nil || i > 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cancel()
		srv.Close()
		tb.Fatalf("listen %s: %v", addr, err)
	}
	n := &node{tb: tb, cfg: cfg, dir: dir, addr: ln.Addr().String(), srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- srv.Run(ctx, ln) }()
	tb.Cleanup(n.stop)
	return n
}

// stop shuts the server down (idempotent).
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	if err := <-n.done; err != nil {
		n.tb.Errorf("server.Run: %v", err)
	}
}

// restart stops the server and starts a new one on the same directory
// and port.
func (n *node) restart() *node {
	n.tb.Helper()
	n.stop()
	return startNodeWith(n.tb, n.dir, n.addr, n.cfg)
}

func (n *node) url() string { return "http://" + n.addr }

func (n *node) token(tb testing.TB, identity string, ttl time.Duration) string {
	tb.Helper()
	cr := n.srv.Credentials()
	tok, err := token.Mint(token.Params{AccountSID: cr.AccountSID, APIKeySID: cr.APIKeySID, APISecret: cr.APISecret,
		Identity: identity, ServiceSID: cr.ServiceSID, TTL: ttl})
	if err != nil {
		tb.Fatalf("token.Mint: %v", err)
	}
	return tok
}

// mintExpired mints a token that expired an hour ago.
func mintExpired(tb testing.TB, n *node) string {
	tb.Helper()
	cr := n.srv.Credentials()
	tok, err := token.Mint(token.Params{AccountSID: cr.AccountSID, APIKeySID: cr.APIKeySID, APISecret: cr.APISecret,
		Identity: "alice", ServiceSID: cr.ServiceSID, TTL: time.Hour,
		Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	if err != nil {
		tb.Fatalf("token.Mint: %v", err)
	}
	return tok
}

// connect opens a client for identity with fast reconnects.
func (n *node) connect(tb testing.TB, identity string, opts client.Options) *client.Client {
	tb.Helper()
	if opts.URL == "" {
		opts.URL = n.url()
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 50 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, n.token(tb, identity, time.Hour), opts)
	if err != nil {
		tb.Fatalf("client.New: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// gate is an HTTP client whose dials wait while the gate is shut.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // closed while open
}

func newGate() *gate {
	g := &gate{ch: make(chan struct{})}
	close(g.ch)
	return g
}

func (g *gate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

func (g *gate) client() *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			select {
			case <-g.wait():
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// shut makes later dials wait; release lets them through.
func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ch = make(chan struct{})
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.ch)
}

// recv reads one event or fails after a timeout.
func recv(tb testing.TB, ch <-chan client.Event) client.Event {
	tb.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			tb.Fatalf("events channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		tb.Fatalf("no event within 10s")
	}
	return client.Event{}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
