package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// otherKey stores a second API key of the env's account.
func (e *env) otherKey(t *testing.T) *chorus.APIKey {
	t.Helper()
	ctx := context.Background()
	k := &chorus.APIKey{SID: chorus.NewSID("SK"), AccountSID: e.creds.AccountSID, Secret: "other-secret-0123456789abcdef0123", DateCreated: time.Now()}
	if err := e.eng.Store().Update(ctx, func(tx chorus.Tx) error { return tx.PutAPIKey(ctx, k) }); err != nil {
		t.Fatal(err)
	}
	return k
}

// noNote fails if a notification arrives within d.
func noNote(t *testing.T, c *tclient, d time.Duration, why string) {
	t.Helper()
	select {
	case n := <-c.notes:
		t.Fatalf("%s: got %s (event %d)", why, n.EventType, n.id())
	case <-time.After(d):
	}
}

// TestRevokedSessionServesNothing: once a session's close 401 is sent (its
// key revoked), the socket lives a grace period longer, but that grace
// serves no request and delivers no event.
func TestRevokedSessionServesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	writer := e.dial(ctx)
	tok, err := tokenWithKey(e, e.otherKey(t), "writer")
	if err != nil {
		t.Fatal(err)
	}
	writer.mustInit(tok)
	doc := wantStatus(t, "create", writer.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d"}), 201, 0)
	sid := doc["sid"].(string)

	victim := e.session("alice")
	victim.establish(1, docSub(sid, num(doc["last_event_id"])))
	if err := e.gw.RevokeKeys(ctx, e.creds.AccountSID, e.creds.APIKeySID); err != nil {
		t.Fatal(err)
	}
	if f := victim.nextControl(5 * time.Second); f.Header.Method != protocol.MethodClose {
		t.Fatalf("frame after revocation = %s, want close", f.Header.Method)
	}
	wantStatus(t, "write by the other key's session", writer.do("POST", "/v3/Documents/"+sid, nil, map[string]any{"data": map[string]any{"n": 1}}), 200, 0)
	noNote(t, victim, 300*time.Millisecond, "event to a session whose key was revoked")
	r := victim.do("POST", "/v3/Documents/"+sid, nil, map[string]any{"data": map[string]any{"n": 2}})
	wantStatus(t, "write in the revoked session's grace", r, 401, 20103)
	r = victim.do("GET", "/v3/Documents/"+sid, nil, nil)
	wantStatus(t, "read in the revoked session's grace", r, 401, 20103)
}

// TestExpiredSessionServesNothing: after the close 410 a request is
// answered 401 (20104); an update in the grace revives the session (the
// SDK may have sent it before it saw the 410), and it serves again, also
// after the grace.
func TestExpiredSessionServesNothing(t *testing.T) {
	// A 10 minute token seen by a clock 598.5 s ahead expires about 1 s
	// after init.
	e := newEnv(t, withConfig(func(c *Config) { c.Now = shifted(598*time.Second + 500*time.Millisecond) }))
	ctx := context.Background()
	c := e.dial(ctx)
	c.mustInit(e.token("alice", 10*time.Minute))
	for {
		f := c.nextControl(5 * time.Second)
		if f.Header.Method == protocol.MethodClose {
			break
		}
	}
	wantStatus(t, "create after the close 410", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d"}), 401, 20104)
	f := c.call(map[string]any{"method": "update", "token": e.token("alice", time.Hour)}, nil)
	if f.Header.Status == nil || f.Header.Status.Code != 200 {
		t.Fatalf("update in the grace = %+v, want 200", f.Header.Status)
	}
	wantStatus(t, "create after the update revived the session", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d"}), 201, 0)
	time.Sleep(3500 * time.Millisecond) // past the 410's grace: the update called its end off
	wantStatus(t, "read after the grace", c.do("GET", "/v3/Documents/d", nil, nil), 200, 0)
}
