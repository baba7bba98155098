package mem

import (
	"context"
	"sync"

	"github.com/chorus-sync/chorus"
)

var _ chorus.Bus = (*Bus)(nil)

// Bus delivers events to the subscribers of their objects in this process.
type Bus struct {
	mu     sync.RWMutex
	subs   map[string]map[*subscriber]struct{} // object SID → subscribers
	closed bool
}

type subscriber struct{ fn func(*chorus.Event) }

// New returns an empty Bus.
func New() *Bus { return &Bus{subs: make(map[string]map[*subscriber]struct{})} }

// Publish calls the subscribers of each event's object, in argument order.
func (b *Bus) Publish(ctx context.Context, events ...*chorus.Event) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, e := range events {
		for s := range b.subs[e.ObjectSID] {
			s.fn(e)
		}
	}
	return nil
}

// Subscribe registers fn for the object's events until cancel is called.
func (b *Bus) Subscribe(objectSID string, fn func(*chorus.Event)) (cancel func(), err error) {
	s := &subscriber{fn: fn}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, chorus.Errorf(chorus.ErrUnavailable, "bus closed")
	}
	set := b.subs[objectSID]
	if set == nil {
		set = make(map[*subscriber]struct{})
		b.subs[objectSID] = set
	}
	set[s] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(b.subs[objectSID], s)
			if len(b.subs[objectSID]) == 0 {
				delete(b.subs, objectSID)
			}
		})
	}, nil
}

// Ping always succeeds: there is nothing to reach.
func (b *Bus) Ping(context.Context) error { return nil }

// Close drops every subscription.
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.subs = make(map[string]map[*subscriber]struct{})
	return nil
}
