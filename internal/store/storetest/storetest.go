package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call and arrange for it to be closed (t.Cleanup).
func Run(t *testing.T, open func(t testing.TB) chorus.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s chorus.Store)
	}{
		{"Ping", testPing},
		{"Accounts", testAccounts},
		{"APIKeys", testAPIKeys},
		{"OperatorCredentials", testOperatorCredentials},
		{"RetiredSecrets", testRetiredSecrets},
		{"ConsoleSignOuts", testConsoleSignOuts},
		{"Services", testServices},
		{"ServicesPaging", testServicesPaging},
		{"ObjectRoundTrip", testObjectRoundTrip},
		{"ObjectLookup", testObjectLookup},
		{"UniqueName", testUniqueName},
		{"UpdateObject", testUpdateObject},
		{"ObjectsPaging", testObjectsPaging},
		{"Items", testItems},
		{"ListItemsPaging", testListItemsPaging},
		{"MapItemsPaging", testMapItemsPaging},
		{"ItemsChangedSince", testItemsChangedSince},
		{"Permissions", testPermissions},
		{"Events", testEvents},
		{"EventsOfType", testEventsOfType},
		{"DeleteObject", testDeleteObject},
		{"DeleteService", testDeleteService},
		{"ExpiredObjects", testExpiredObjects},
		{"ExpiredItems", testExpiredItems},
		{"TrimEvents", testTrimEvents},
		{"TrimDeletedObject", testTrimDeletedObject},
		{"EventTime", testEventTime},
		{"Rollback", testRollback},
		{"ConcurrentRollback", testConcurrentRollback},
		{"ReadModifyWrite", testReadModifyWrite},
		{"View", testView},
		{"ViewSnapshot", testViewSnapshot},
		{"CanceledContext", testCanceledContext},
		{"Outbox", testOutbox},
		{"Abandoned", testAbandoned},
		{"AbandonedConcurrent", testAbandonedConcurrent},
		{"Presence", testPresence},
		{"Now", testNow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// base is the time fixtures count from. Times have microsecond precision so
// that backends storing microseconds round-trip them too.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// at returns base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

func ptr[T any](v T) *T { return &v }

// update runs fn in s.Update and fails t on error.
func update(t testing.TB, s chorus.Store, fn func(tx chorus.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs fn in s.View and fails t on error.
func view(t testing.TB, s chorus.Store, fn func(tx chorus.ReadTx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// get reads one value in a View.
func get[T any](t testing.TB, s chorus.Store, fn func(ctx context.Context, tx chorus.ReadTx) (T, error)) (T, error) {
	t.Helper()
	var v T
	var ferr error
	view(t, s, func(tx chorus.ReadTx) error {
		v, ferr = fn(context.Background(), tx)
		return nil
	})
	return v, ferr
}

// mustGet reads one value in a View and fails t on error.
func mustGet[T any](t testing.TB, s chorus.Store, what string, fn func(ctx context.Context, tx chorus.ReadTx) (T, error)) T {
	t.Helper()
	v, err := get(t, s, fn)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// wantNotFound fails t unless err is a wrapped chorus.ErrNotFound.
func wantNotFound(t testing.TB, what string, err error) {
	t.Helper()
	if !errors.Is(err, chorus.ErrNotFound) {
		t.Errorf("%s: err = %v, want ErrNotFound", what, err)
	}
}

// Normalization for comparison: times in UTC without monotonic reading.

func normTime(tm time.Time) time.Time { return tm.UTC().Round(0) }

func normTimePtr(tm *time.Time) *time.Time {
	if tm == nil {
		return nil
	}
	return ptr(normTime(*tm))
}

func norm(v any) any {
	switch v := v.(type) {
	case *chorus.Account:
		c := *v
		c.DateCreated = normTime(c.DateCreated)
		return c
	case *chorus.APIKey:
		c := *v
		c.DateCreated = normTime(c.DateCreated)
		return c
	case *chorus.Service:
		c := *v
		c.DateCreated, c.DateUpdated = normTime(c.DateCreated), normTime(c.DateUpdated)
		return c
	case *chorus.Object:
		c := *v
		c.DateCreated, c.DateUpdated = normTime(c.DateCreated), normTime(c.DateUpdated)
		c.DateExpires = normTimePtr(c.DateExpires)
		return c
	case *chorus.Item:
		c := *v
		c.DateCreated, c.DateUpdated = normTime(c.DateCreated), normTime(c.DateUpdated)
		c.DateExpires = normTimePtr(c.DateExpires)
		return c
	case *chorus.Event:
		c := *v
		c.DateCreated = normTime(c.DateCreated)
		c.DateExpires = normTimePtr(c.DateExpires)
		return c
	case *chorus.Permission:
		return *v
	}
	panic(fmt.Sprintf("storetest: norm of %T", v))
}

// show renders a value for failure messages.
func show(v any) string {
	if v == nil || (reflect.ValueOf(v).Kind() == reflect.Pointer && reflect.ValueOf(v).IsNil()) {
		return "nil"
	}
	b, err := json.Marshal(norm(v))
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// checkEqual fails t unless got and want are equal up to time
// representation.
func checkEqual[T any](t testing.TB, what string, got, want *T) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s = %s, want %s", what, show(got), show(want))
		}
		return
	}
	if !reflect.DeepEqual(norm(got), norm(want)) {
		t.Errorf("%s = %+v, want %+v", what, norm(got), norm(want))
	}
}

// checkList compares two slices element-wise.
func checkList[T any](t testing.TB, what string, got, want []*T) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d elements, want %d", what, len(got), len(want))
		for i, g := range got {
			t.Logf("  got[%d] = %s", i, show(g))
		}
		return
	}
	for i := range got {
		checkEqual(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

// fixture is an account with one service.
type fixture struct {
	acc *chorus.Account
	svc *chorus.Service
}

func newAccount(i int) *chorus.Account {
	return &chorus.Account{
		SID:          chorus.NewSID(chorus.PrefixAccount),
		AuthToken:    chorus.NewSecret(32),
		FriendlyName: fmt.Sprintf("account %d", i),
		DateCreated:  at(time.Duration(i) * time.Minute),
	}
}

func newService(accountSID string, created time.Time) *chorus.Service {
	return &chorus.Service{
		SID:          chorus.NewSID(chorus.PrefixService),
		AccountSID:   accountSID,
		FriendlyName: "service",
		DateCreated:  created,
		DateUpdated:  created,
	}
}

func setup(t testing.TB, s chorus.Store) fixture {
	t.Helper()
	f := fixture{acc: newAccount(0)}
	f.svc = newService(f.acc.SID, at(0))
	update(t, s, func(tx chorus.Tx) error {
		ctx := context.Background()
		if err := tx.PutAccount(ctx, f.acc); err != nil {
			return err
		}
		return tx.PutService(ctx, f.svc)
	})
	return f
}

// newObject returns an object of kind k in f's service.
func (f fixture) newObject(k chorus.Kind, created time.Time) *chorus.Object {
	o := &chorus.Object{
		Kind:        k,
		SID:         chorus.NewSID(k.Prefix()),
		AccountSID:  f.acc.SID,
		ServiceSID:  f.svc.SID,
		Revision:    0,
		CreatedBy:   "alice",
		DateCreated: created,
		DateUpdated: created,
	}
	switch k {
	case chorus.KindDocument:
		o.Data = json.RawMessage(`{}`)
	case chorus.KindList:
		o.Data = json.RawMessage(`{"ctx":1}`)
	}
	return o
}

// insert inserts objects in one Update.
func insert(t testing.TB, s chorus.Store, objs ...*chorus.Object) {
	t.Helper()
	update(t, s, func(tx chorus.Tx) error {
		for _, o := range objs {
			if err := tx.InsertObject(context.Background(), o); err != nil {
				return err
			}
		}
		return nil
	})
}

func newItem(o *chorus.Object, index int64, key string, created time.Time) *chorus.Item {
	return &chorus.Item{
		Kind:        o.Kind,
		ObjectSID:   o.SID,
		Index:       index,
		Key:         key,
		Data:        json.RawMessage(fmt.Sprintf(`{"i":%d,"k":%q}`, index, key)),
		Revision:    1,
		LastEventID: 1,
		CreatedBy:   "bob",
		DateCreated: created,
		DateUpdated: created,
	}
}

func putItems(t testing.TB, s chorus.Store, items ...*chorus.Item) {
	t.Helper()
	update(t, s, func(tx chorus.Tx) error {
		for _, it := range items {
			if err := tx.PutItem(context.Background(), it); err != nil {
				return err
			}
		}
		return nil
	})
}

func newEvent(o *chorus.Object, id int64, created time.Time) *chorus.Event {
	typ := chorus.EventDocumentUpdated
	switch o.Kind {
	case chorus.KindList:
		typ = chorus.EventListItemAdded
	case chorus.KindMap:
		typ = chorus.EventMapItemAdded
	case chorus.KindStream:
		typ = chorus.EventStreamRemoved
	}
	return &chorus.Event{
		Type:        typ,
		ID:          id,
		AccountSID:  o.AccountSID,
		ServiceSID:  o.ServiceSID,
		ObjectSID:   o.SID,
		Kind:        o.Kind,
		Revision:    chorus.FormatRevision(id),
		Data:        json.RawMessage(fmt.Sprintf(`{"id":%d}`, id)),
		DateCreated: created,
	}
}

func appendEvents(t testing.TB, s chorus.Store, events ...*chorus.Event) {
	t.Helper()
	update(t, s, func(tx chorus.Tx) error {
		for _, e := range events {
			if err := tx.AppendEvent(context.Background(), e); err != nil {
				return err
			}
		}
		return nil
	})
}

// eventIDs returns the IDs of events.
func eventIDs(events []*chorus.Event) []int64 {
	ids := make([]int64, 0, len(events))
	for _, e := range events {
		ids = append(ids, e.ID)
	}
	return ids
}
