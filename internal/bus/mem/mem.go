package mem

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/chorus-sync/chorus"
)

var _ chorus.Bus = (*Bus)(nil)

// Bus delivers events to the subscribers of their objects in this process.
//
// Each object has its own subscribers and locks: a publish that takes long
// in its subscribers (the live queries a map's writes are matched against)
// holds back only the publishes of its own object and the cancels that
// wait for it, never another object's publish or a subscription. With one
// lock for the whole bus, a subscription waiting for it behind such a
// publish held back every later publish on the node (a tester's 4,000
// live queries made every other user's writes wait up to 1.3 s).
type Bus struct {
	mu     sync.RWMutex
	topics map[string]*topic // object SID → its subscribers
	closed bool
}

// topic is one object's subscribers. subs is replaced, never changed in
// place, under mu (taken with Bus.mu held, never the other way round), so
// that a publish reads it without a lock; a publish holds calling (read)
// while it calls them, and a cancel takes it (write) to wait for the
// publishes that may still call its subscriber.
type topic struct {
	mu      sync.Mutex
	subs    atomic.Pointer[[]*subscriber]
	calling sync.RWMutex
}

type subscriber struct{ fn func(*chorus.Event) }

// New returns an empty Bus.
func New() *Bus { return &Bus{topics: make(map[string]*topic)} }

// Publish calls the subscribers of each event's object, in argument order.
func (b *Bus) Publish(ctx context.Context, events ...*chorus.Event) error {
	for _, e := range events {
		b.mu.RLock()
		t := b.topics[e.ObjectSID]
		b.mu.RUnlock()
		if t == nil {
			continue
		}
		t.calling.RLock()
		for _, s := range *t.subs.Load() {
			s.fn(e)
		}
		t.calling.RUnlock()
	}
	return nil
}

// Subscribe registers fn for the object's events until cancel is called.
// A publish of the object under way when it returns may not call fn;
// every later one does. Once cancel returned, fn is not called again.
func (b *Bus) Subscribe(objectSID string, fn func(*chorus.Event)) (cancel func(), err error) {
	s := &subscriber{fn: fn}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, chorus.Errorf(chorus.ErrUnavailable, "bus closed")
	}
	t := b.topics[objectSID]
	if t == nil {
		t = &topic{}
		t.subs.Store(&[]*subscriber{})
		b.topics[objectSID] = t
	}
	t.mu.Lock()
	t.subs.Store(new(append(slices.Clip(*t.subs.Load()), s)))
	t.mu.Unlock()
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() { b.cancel(objectSID, t, s) })
	}, nil
}

// cancel removes s from t, waits for the publishes that may still call
// it, and forgets t once it has no subscriber.
func (b *Bus) cancel(objectSID string, t *topic, s *subscriber) {
	b.mu.Lock()
	t.mu.Lock()
	rest := slices.DeleteFunc(slices.Clone(*t.subs.Load()), func(x *subscriber) bool { return x == s })
	t.subs.Store(&rest)
	if len(rest) == 0 && b.topics[objectSID] == t {
		delete(b.topics, objectSID)
	}
	t.mu.Unlock()
	b.mu.Unlock()
	t.calling.Lock() // waits for the publishes that loaded the list with s
	//lint:ignore SA2001 taking the lock is the point: see above
	t.calling.Unlock()
}

// Ping always succeeds: there is nothing to reach.
func (b *Bus) Ping(context.Context) error { return nil }

// Close drops every subscription.
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.topics = make(map[string]*topic)
	return nil
}
