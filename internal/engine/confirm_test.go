package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
)

// stalledBus is an in-process bus whose Ping fails until stalls runs out,
// as a NATS server stopped for a while answers no ping; a bus that loses
// its connection (lose) counts one at the first failed Ping.
type stalledBus struct {
	*mem.Bus
	stalls      atomic.Int32
	lose        bool
	disconnects atomic.Uint64
	published   atomic.Int32  // events given to the bus
	pingTime    time.Duration // how long a Ping takes (a stalled NATS: its 2 s timeout)
}

func (b *stalledBus) Ping(ctx context.Context) error {
	time.Sleep(b.pingTime)
	if b.stalls.Add(-1) >= 0 {
		if b.lose {
			b.disconnects.Store(1)
		}
		return chorus.Wrap(chorus.ErrUnavailable, errors.New("no pong"))
	}
	return b.Bus.Ping(ctx)
}

func (b *stalledBus) Disconnects() uint64 { return b.disconnects.Load() }

func (b *stalledBus) Publish(ctx context.Context, events ...*chorus.Event) error {
	b.published.Add(int32(len(events)))
	return b.Bus.Publish(ctx, events...)
}

// TestStreamMessageConfirmedAfterStall: a message whose bus stalls is
// answered once the bus confirms it, within MessageConfirmWait, and so is
// published once (a 503 made the SDK publish it again while the first copy
// was on its way: 3 copies for one publish). Past the wait, or after the
// bus lost its connection, the answer is 503 and says the outcome is
// unknown.
func TestStreamMessageConfirmedAfterStall(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		stalls int32
		lose   bool
		wait   time.Duration
		ok     bool
	}{
		{"a stall shorter than the wait", 5, false, 10 * time.Second, true},
		{"a stall longer than the wait", 1000, false, 300 * time.Millisecond, false},
		{"a lost connection", 1, true, 10 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bus := &stalledBus{Bus: mem.New(), lose: tc.lose}
			t.Cleanup(func() { bus.Close() })
			bus.stalls.Store(tc.stalls)
			eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: bus, Now: f.clock.Now, MessageConfirmWait: tc.wait})
			stream, err := eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindStream, engine.CreateObject{})
			if err != nil {
				t.Fatal(err)
			}
			var got atomic.Int32
			cancel, err := bus.Subscribe(stream.SID, func(*chorus.Event) { got.Add(1) })
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			start := time.Now()
			_, err = eng.PublishMessage(ctx, engine.SystemActor(), f.svc, stream.SID, []byte(`{"n":1}`))
			took := time.Since(start)
			if tc.ok {
				if err != nil || got.Load() != 1 {
					t.Fatalf("publish = %v after %v, %d delivered; want success, 1", err, took, got.Load())
				}
				return
			}
			if chorus.ErrorCode(err) != chorus.ErrUnavailable.Code || !strings.Contains(err.Error(), "may still reach") {
				t.Fatalf("publish = %v, want 503 saying the message may still reach subscribers", err)
			}
			if tc.lose && took > 2*time.Second {
				t.Errorf("after a lost connection the publish waited %v, want an answer at once", took)
			}
		})
	}
}

// TestStreamMessagesWhileBusStalled: once a message waited its whole wait,
// the next ones are not given to the stalled bus (each would arrive beside
// its publisher's retry) and are refused at once, saying they were not
// published, instead of each waiting again and holding the requests an SDK
// session queued behind it (a reviewer's document write waited 21.7 s);
// when the bus answers again, publishing goes on.
func TestStreamMessagesWhileBusStalled(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bus := &stalledBus{Bus: mem.New(), pingTime: 100 * time.Millisecond}
	t.Cleanup(func() { bus.Close() })
	bus.stalls.Store(1 << 20)
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: bus, Now: f.clock.Now, MessageConfirmWait: 300 * time.Millisecond})
	stream, err := eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindStream, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	publish := func() (time.Duration, error) {
		start := time.Now()
		_, err := eng.PublishMessage(ctx, engine.SystemActor(), f.svc, stream.SID, []byte(`{"n":1}`))
		return time.Since(start), err
	}
	if _, err := publish(); !strings.Contains(fmt.Sprint(err), "may still reach") {
		t.Fatalf("first publish during a stall = %v, want 503 saying it may still reach subscribers", err)
	}
	before := bus.published.Load()
	took, err := publish()
	// At once: not after another MessageConfirmWait (a bound well above
	// the few milliseconds it takes, so that a loaded machine does not
	// fail it).
	if !strings.Contains(fmt.Sprint(err), "was not published") || bus.published.Load() != before || took >= 300*time.Millisecond {
		t.Fatalf("second publish during the stall = %v after %v, %d more given to the bus; want 503 \"not published\" without waiting again, none",
			err, took, bus.published.Load()-before)
	}
	bus.stalls.Store(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The first publish after the bus answers again may be refused:
		// its probe runs in the background.
		_, err := publish()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish once the bus answers = %v, want success", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
