package gateway

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/token"
)

// TestKeyCache: inits with tokens of one key read it from the store once;
// once the key is deleted, a keys_revoked event (as another node sends
// after a revocation) or RevokeKeys empties the cache at once, long
// before the entries would expire.
func TestKeyCache(t *testing.T) {
	var lookups atomic.Int64
	e := newEnv(t, func(e *env, c *Config) {
		c.Verifier = &token.Verifier{Keys: func(ctx context.Context, sid string) (*chorus.APIKey, error) {
			lookups.Add(1)
			return e.eng.APIKey(ctx, sid)
		}}
	})
	ctx := context.Background()
	tok := e.token("alice", time.Hour)
	initStatus := func() int {
		c := e.dial(ctx)
		defer c.ws.CloseNow()
		f := c.init(tok)
		if f.Header.Status == nil {
			t.Fatal("init reply without status")
		}
		return f.Header.Status.Code
	}
	for i := 0; i < 3; i++ {
		if code := initStatus(); code != 200 {
			t.Fatalf("init %d = %d, want 200", i, code)
		}
	}
	if n := lookups.Load(); n != 1 {
		t.Fatalf("3 inits read the key %d times, want 1", n)
	}

	// Another node revoked the key: it is gone from the store, and the
	// event reaches this node.
	if err := e.eng.Store().Update(ctx, func(tx chorus.Tx) error { return tx.DeleteAPIKey(ctx, e.creds.APIKeySID) }); err != nil {
		t.Fatal(err)
	}
	if code := initStatus(); code != 200 {
		t.Fatalf("init before the event = %d, want 200 (cached; the event makes it take effect)", code)
	}
	data, _ := json.Marshal([]string{e.creds.APIKeySID})
	if err := e.bus.Publish(ctx, &chorus.Event{Type: chorus.EventKeysRevoked, AccountSID: e.creds.AccountSID,
		ObjectSID: chorus.ControlTopic, Data: data, DateCreated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(keyCacheTTL / 3)
	for initStatus() != 401 {
		if time.Now().After(deadline) {
			t.Fatal("a deleted key still verifies after the keys_revoked event")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// RevokeKeys on this node: at once, no event needed.
	other := &chorus.APIKey{SID: chorus.NewSID("SK"), AccountSID: e.creds.AccountSID, Secret: "other-secret-0123456789abcdef0123", DateCreated: time.Now()}
	if err := e.eng.Store().Update(ctx, func(tx chorus.Tx) error { return tx.PutAPIKey(ctx, other) }); err != nil {
		t.Fatal(err)
	}
	tok, _ = tokenWithKey(e, other, "bob")
	if code := initStatus(); code != 200 {
		t.Fatalf("init with the new key = %d, want 200", code)
	}
	if err := e.eng.Store().Update(ctx, func(tx chorus.Tx) error { return tx.DeleteAPIKey(ctx, other.SID) }); err != nil {
		t.Fatal(err)
	}
	e.gw.keys.mu.Lock()
	gen := e.gw.keys.gen
	e.gw.keys.mu.Unlock()
	if err := e.gw.RevokeKeys(ctx, e.creds.AccountSID, other.SID); err != nil {
		t.Fatal(err)
	}
	e.gw.keys.mu.Lock()
	if e.gw.keys.gen == gen || len(e.gw.keys.keys) != 0 {
		t.Errorf("after RevokeKeys: gen %d → %d, %d keys cached; want emptied", gen, e.gw.keys.gen, len(e.gw.keys.keys))
	}
	e.gw.keys.mu.Unlock()
	if code := initStatus(); code != 401 {
		t.Fatalf("init with a revoked key = %d, want 401", code)
	}
}
