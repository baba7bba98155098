package gateway

import (
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// presenceLog records Presence calls.
type presenceLog struct {
	mu    sync.Mutex
	calls []string
}

func (p *presenceLog) Connected(svc *chorus.Service, identity, endpointID string) {
	p.add("connected " + identity + " " + svc.SID + " " + endpointID)
}

func (p *presenceLog) Disconnected(svc *chorus.Service, identity, endpointID string) {
	p.add("disconnected " + identity + " " + svc.SID + " " + endpointID)
}

func (p *presenceLog) add(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, s)
}

func (p *presenceLog) get() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.calls...)
}

func TestPresenceHearsSessionsStartAndEnd(t *testing.T) {
	log := &presenceLog{}
	e := newEnv(t, withConfig(func(c *Config) { c.Presence = log }))
	c := e.session("alice")
	// A refused init is no session.
	bad := e.dial(t.Context())
	bad.init("not-a-token")
	bad.ws.CloseNow()
	deadline := time.Now().Add(5 * time.Second)
	for len(log.get()) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	calls := log.get()
	if len(calls) != 1 || calls[0][:len("connected alice "+e.svc.SID)] != "connected alice "+e.svc.SID {
		t.Fatalf("after init: Presence calls %q, want one connected for alice", calls)
	}
	endpoint := calls[0][len("connected alice "+e.svc.SID+" "):]
	c.ws.CloseNow()
	for len(log.get()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if calls = log.get(); len(calls) != 2 || calls[1] != "disconnected alice "+e.svc.SID+" "+endpoint {
		t.Fatalf("after close: Presence calls %q, want disconnected for the same endpoint", calls)
	}
}
