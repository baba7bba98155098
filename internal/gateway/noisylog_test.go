package gateway

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus/internal/logtest"
)

// TestRejectedInitsLogBounded: one socket can send init after init with a
// bad token, each refused; the log takes a burst of them, then 10 a
// second, and says how many it left out. Every refusal is counted.
func TestRejectedInitsLogBounded(t *testing.T) {
	logs := &logtest.Buffer{}
	e := newEnv(t, withConfig(func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) }))
	ctx := context.Background()
	const n = 300 // maxPreInitRequests a connection, then a new one, as a flood would
	bad := e.tokenAt("mallory", time.Hour, time.Now(), e.creds.ServiceSID, "not-the-secret-not-the-secret-00")
	var c *tclient
	start := time.Now()
	for i := range n {
		if i%maxPreInitRequests == 0 {
			if c != nil {
				c.ws.Close(websocket.StatusNormalClosure, "")
			}
			c = e.dial(ctx)
		}
		if f := c.init(bad); f.Header.Status == nil || f.Header.Status.Code != 401 {
			t.Fatalf("init with a bad token: %+v, want 401", f.Header.Status)
		}
	}
	elapsed := time.Since(start)
	lines := strings.Count(logs.String(), "init rejected")
	if most := noisyBurst + int(elapsed.Seconds()*noisyRate) + 1; lines > most {
		t.Errorf("%d rejected inits in %v logged %d lines, want at most %d", n, elapsed, lines, most)
	}
	if lines < noisyBurst {
		t.Errorf("logged %d lines, want the first %d", lines, noisyBurst)
	}
	time.Sleep(200 * time.Millisecond) // a token of the limiter comes back
	c.ws.Close(websocket.StatusNormalClosure, "")
	e.dial(ctx).init(bad)
	if !strings.Contains(logs.String(), "suppressed=") {
		t.Errorf("no line says how many were left out:\n%s", logs.String())
	}
	if got := e.gw.Stats().InitsRejected; got != n+1 {
		t.Errorf("InitsRejected = %d, want %d", got, n+1)
	}
}
