package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
)

// lostCommitStore is a Store whose Updates lose their COMMIT's answer, as
// when PostgreSQL is killed during it: each commits (commit) or rolls back
// and returns an error wrapping chorus.ErrCommitUnknown. While down, its
// Views fail too.
type lostCommitStore struct {
	chorus.Store
	commit    bool
	down      atomic.Bool
	unsettled bool // the COMMIT may still be running: Settle says false
}

// unsettledCommit is a lost COMMIT that the server may still be running.
type unsettledCommit struct{ error }

func (unsettledCommit) Settle(context.Context) bool { return false }
func (u unsettledCommit) Unwrap() error             { return u.error }

var errRolledBack = errors.New("rolled back by the test")

func (s *lostCommitStore) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	err := s.Store.Update(ctx, func(tx chorus.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		if !s.commit {
			return errRolledBack
		}
		return nil
	})
	if err != nil && !errors.Is(err, errRolledBack) {
		return err
	}
	lost := errors.Join(errors.New("commit: conn closed"), chorus.ErrCommitUnknown)
	if s.unsettled {
		lost = unsettledCommit{lost}
	}
	return chorus.Wrap(chorus.ErrUnavailable, lost)
}

func (s *lostCommitStore) View(ctx context.Context, fn func(chorus.ReadTx) error) error {
	if s.down.Load() {
		return chorus.Wrap(chorus.ErrUnavailable, errors.New("down"))
	}
	return s.Store.View(ctx, fn)
}

// TestCommitWithLostAnswer: a write whose COMMIT lost its answer is
// looked up: made, it is answered and its event published (a cluster
// tester's writes answered 503 had been stored and were never shown to
// subscribers); not made, it is refused, so that a retry makes it once
// (the SDK's retry stored a list push twice). When the store cannot tell,
// the refusal says the write may have been made.
func TestCommitWithLostAnswer(t *testing.T) {
	defer engine.SetResolveWait(500 * time.Millisecond)()
	f := newFixture(t)
	ctx := context.Background()
	doc, err := f.eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "d"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                    string
		commit, down, unsettled bool
		wantOK                  bool
		wantMsg                 string
	}{
		{"committed", true, false, false, true, ""},
		{"not committed", false, false, false, false, "Service unavailable"},
		{"unknown", true, true, false, false, "may have been made"},
		// Not in the log yet, but the server may still commit it: a
		// reviewer's slow COMMIT was called not made, and committed 3 s later.
		{"not settled", false, false, true, false, "may have been made"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &lostCommitStore{Store: f.eng.Store(), commit: tc.commit, unsettled: tc.unsettled}
			st.down.Store(tc.down)
			bus := mem.New()
			t.Cleanup(func() { bus.Close() })
			var published atomic.Int32
			cancel, err := bus.Subscribe(doc.SID, func(*chorus.Event) { published.Add(1) })
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			eng := engine.New(engine.Config{Store: st, Bus: bus, Now: f.clock.Now})
			before := docData(t, f, doc.SID)
			_, err = eng.UpdateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"v":"` + tc.name + `"}`)})
			after := docData(t, f, doc.SID)
			if tc.wantOK {
				if err != nil || published.Load() != 1 || after == before {
					t.Fatalf("update = %v, published %d, data %s; want success, 1 event, the new data", err, published.Load(), after)
				}
				return
			}
			if chorus.ErrorCode(err) != chorus.ErrUnavailable.Code || !strings.Contains(err.Error(), tc.wantMsg) || published.Load() != 0 {
				t.Fatalf("update = %v, published %d; want 503 (%q), nothing published", err, published.Load(), tc.wantMsg)
			}
			if !tc.commit && after != before {
				t.Errorf("a write refused as not made changed the data: %s", after)
			}
			if (tc.down || tc.unsettled) && !eng.Unposted() {
				t.Error("an unknown outcome did not ask the nodes to re-read (Unposted)")
			}
		})
	}

	// A creation's event is not logged, so its outcome stays unknown:
	// made or not, the answer says it may have been (a reviewer's
	// creations, permissions and Service changes were answered "not made"
	// though they were).
	for _, commit := range []bool{true, false} {
		st := &lostCommitStore{Store: f.eng.Store(), commit: commit}
		eng := engine.New(engine.Config{Store: st, Bus: mem.New(), Now: f.clock.Now})
		_, err := eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindList, engine.CreateObject{})
		if chorus.ErrorCode(err) != chorus.ErrUnavailable.Code || !strings.Contains(err.Error(), "may have been made") || !eng.Unposted() {
			t.Errorf("a creation whose commit (made: %t) lost its answer = %v, Unposted %t; want 503 saying it may have been made, Unposted", commit, err, eng.Unposted())
		}
	}
}

func docData(t *testing.T, f *fixture, sid string) string {
	t.Helper()
	o, err := f.eng.Object(context.Background(), engine.SystemActor(), f.svc, chorus.KindDocument, sid)
	if err != nil {
		t.Fatal(err)
	}
	return string(o.Data)
}
