package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/client"
)

// Client.Close from a callback returns; from another goroutine it still
// waits for the callback in progress.
func TestCloseFromCallback(t *testing.T) {
	n := startNode(t, "", "")
	t.Run("in the callback", func(t *testing.T) {
		ctx := ctxT(t)
		// No Cleanup Close: without the fix it would hang like this one.
		c, err := client.New(ctx, n.token(t, "alice", time.Hour), client.Options{URL: n.url(), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		d, err := c.Document(ctx, "game", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		events := d.Events()
		closed := make(chan error, 1)
		d.OnEvent(func(ev client.Event) {
			if ev.Type == chorus.EventDocumentRemoved {
				closed <- c.Close() // shut down when the game document goes away
			}
		})
		if err := d.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Client.Close called from a callback did not return")
		}
		drainClosed(t, events, "Events after Close from a callback")
		if _, err := c.Document(ctx, "other", client.OpenOrCreate); !errors.Is(err, client.ErrClosed) {
			t.Errorf("Document after Close = %v, want ErrClosed", err)
		}
		c.Close() // again, from the test goroutine: returns
	})
	t.Run("from another goroutine", func(t *testing.T) {
		ctx := ctxT(t)
		c := n.connect(t, "bob", client.Options{})
		d, err := c.Document(ctx, "slow", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		var running atomic.Bool
		d.OnEvent(func(client.Event) {
			once.Do(func() {
				running.Store(true)
				close(entered)
				<-release
				running.Store(false)
			})
		})
		if err := d.Set(ctx, counter{N: 1}); err != nil {
			t.Fatal(err)
		}
		<-entered
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
			t.Fatal("Close returned while a callback was running")
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return after the callback did")
		}
		if running.Load() {
			t.Error("callback still running after Close returned")
		}
	})
}

// A provider of tokens shorter than the server's 3-minute warning is
// warned about at once after each update; it must not be called in a
// loop, and the session must outlive each token.
func TestTokenRenewalShortTokens(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	const ttl = 3 * time.Second
	var mu sync.Mutex
	var calls []time.Time
	provider := func(context.Context) (string, error) {
		mu.Lock()
		calls = append(calls, time.Now())
		mu.Unlock()
		return n.token(t, "alice", ttl), nil
	}
	var dials atomic.Int32
	var dialer net.Dialer
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	}}}
	c, err := client.New(ctx, n.token(t, "alice", ttl), client.Options{URL: n.url(), TokenProvider: provider,
		HTTPClient: hc, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Document(ctx, "short", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // past the first two tokens' expiry
	if err := d.Set(ctx, counter{N: 1}); err != nil {
		t.Errorf("Set after the first tokens expired: %v", err)
	}
	mu.Lock()
	got := append([]time.Time(nil), calls...)
	mu.Unlock()
	// Renewed at once on the first warning, then half-way through each
	// fresh token's 2-3 s: about every 1-1.5 s.
	if len(got) < 2 || len(got) > 6 {
		t.Errorf("TokenProvider called %d times in 4s, want 2-6", len(got))
	}
	for i := 1; i < len(got) && i < 10; i++ {
		if gap := got[i].Sub(got[i-1]); gap < 500*time.Millisecond {
			t.Errorf("TokenProvider calls %d and %d only %v apart", i, i+1, gap)
		}
	}
	if dials.Load() != 1 {
		t.Errorf("%d connections, want 1 (each token renewed on the live session)", dials.Load())
	}
}

// A request without a reply within RequestTimeout fails with an error
// that errors.Is context.DeadlineExceeded.
func TestNoReplyIsDeadlineExceeded(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	// No reply comes back from the server within a microsecond.
	c := n.connect(t, "alice", client.Options{RequestTimeout: time.Microsecond})
	var err error
	for range 20 { // a reply could in theory race the timer: retry
		if _, err = c.Document(ctx, "d", client.OpenOrCreate); err != nil {
			break
		}
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(fmtErr(err), "no reply within") || ctx.Err() != nil {
		t.Errorf("error = %v, want a \"no reply within\" error that is context.DeadlineExceeded", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// New's error when it never connected wraps the last connection error.
func TestConnectErrorWrapsLastError(t *testing.T) {
	n := startNode(t, "", "")
	tok := n.token(t, "alice", time.Hour)
	n.stop() // nothing listens on its port any more
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := client.New(ctx, tok, client.Options{URL: n.url(), MinBackoff: 20 * time.Millisecond, Logger: quietLogger()})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("New = %v, want an error that is both context.DeadlineExceeded and ECONNREFUSED", err)
	}
}

// A 4xx answer to the websocket upgrade (here a wrong path: 404) fails New
// at once with the server's error; it used to be retried until ctx ended
// (forever with context.Background()).
func TestWrongURLFailsAtOnce(t *testing.T) {
	n := startNode(t, "", "")
	tok := n.token(t, "alice", time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := client.New(ctx, tok, client.Options{URL: n.url() + "/not-chorus", MinBackoff: 20 * time.Millisecond, Logger: quietLogger()})
	var ce *chorus.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Fatalf("New on a wrong path = %v, want the server's 404", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("New on a wrong path took %v (%v), want a failure at once", time.Since(start), err)
	}
}
