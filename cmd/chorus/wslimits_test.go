package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
)

// wsRefusal dials and returns the HTTP status and Twilio code of a
// refused handshake, or 0, 0 and the connection.
func wsRefusal(t *testing.T, url string) (int, int, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		return 0, 0, c
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	var body struct {
		Code int `json:"code"`
	}
	if resp.Body != nil {
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &body)
	}
	return resp.StatusCode, body.Code, nil
}

// TestServeWebsocketCaps: --ws-max-unauth-per-ip and --ws-max-conns reach
// the gateway.
func TestServeWebsocketCaps(t *testing.T) {
	dir := t.TempDir()
	p := startServe(t, dir, "--ws-max-conns", "2", "--ws-max-unauth-per-ip", "1")
	defer p.stop(t)
	url := "ws" + strings.TrimPrefix(p.base, "http") + "/v3/wsconnect"

	_, _, first := wsRefusal(t, url)
	if first == nil {
		t.Fatal("first connection refused")
	}
	if st, code, _ := wsRefusal(t, url); st != http.StatusTooManyRequests || code != 20429 {
		t.Fatalf("second unauthenticated connection = %d %d, want 429 20429", st, code)
	}
	// Authenticated, the first no longer counts against the address...
	creds := credentials(t, dir)
	tok, err := token.Mint(token.Params{AccountSID: creds[envAccountSID], APIKeySID: creds[envAPIKey], APISecret: creds[envAPISecret],
		Identity: "alice", ServiceSID: creds[envServiceSID], TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok, "metadata": map[string]any{}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.Write(ctx, websocket.MessageBinary, protocol.Encode(nil, h, nil)); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := first.Read(ctx); err != nil || !strings.Contains(string(msg), `"code":200`) {
		t.Fatalf("init reply = %q, %v", msg, err)
	}
	if _, _, second := wsRefusal(t, url); second == nil {
		t.Fatal("connection after the first one's init refused")
	}
	// ...but the node holds only two.
	if st, code, _ := wsRefusal(t, url); st != http.StatusServiceUnavailable || code != 20503 {
		t.Fatalf("third connection = %d %d, want 503 20503", st, code)
	}
}

// TestServeWebsocketUnauthDefault: without --ws-max-unauth-per-ip, one
// address may hold defaultWSMaxUnauthPerIP connections that have not sent
// init, and no more.
func TestServeWebsocketUnauthDefault(t *testing.T) {
	p := startServe(t, t.TempDir())
	defer p.stop(t)
	url := "ws" + strings.TrimPrefix(p.base, "http") + "/v3/wsconnect"
	for i := range defaultWSMaxUnauthPerIP {
		if st, code, c := wsRefusal(t, url); c == nil {
			t.Fatalf("unauthenticated connection %d = %d %d, want accepted", i+1, st, code)
		}
	}
	if st, code, _ := wsRefusal(t, url); st != http.StatusTooManyRequests || code != 20429 {
		t.Fatalf("connection %d = %d %d, want 429 20429", defaultWSMaxUnauthPerIP+1, st, code)
	}
}
