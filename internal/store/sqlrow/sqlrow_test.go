package sqlrow_test

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// fakeRow is a Scanner over values as a driver hands them out: it assigns
// each to its target by the rules both drivers follow for these types.
type fakeRow []any

func (r fakeRow) Scan(dest ...any) error {
	if len(dest) != len(r) {
		return fmt.Errorf("scan: %d targets for %d columns", len(dest), len(r))
	}
	for i, d := range dest {
		switch d := d.(type) {
		case sql.Scanner:
			if err := d.Scan(r[i]); err != nil {
				return err
			}
		default:
			dv := reflect.ValueOf(d).Elem()
			if r[i] == nil {
				dv.SetZero()
				continue
			}
			sv := reflect.ValueOf(r[i])
			if !sv.Type().ConvertibleTo(dv.Type()) {
				return fmt.Errorf("scan column %d: %T into %T", i, r[i], d)
			}
			dv.Set(sv.Convert(dv.Type()))
		}
	}
	return nil
}

type fakeRows struct {
	rows []fakeRow
	i    int
	err  error
}

func (r *fakeRows) Next() bool             { r.i++; return r.i <= len(r.rows) }
func (r *fakeRows) Scan(dest ...any) error { return r.rows[r.i-1].Scan(dest...) }
func (r *fakeRows) Err() error             { return r.err }

func TestTime(t *testing.T) {
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	tests := []struct {
		name string
		in   time.Time
		want int64
	}{
		{"zero", time.Time{}, math.MinInt64},
		{"epoch", time.Unix(0, 0), 0},
		{"zoned", at, at.UnixNano()},
		{"before epoch", time.Unix(-5, 7), -5*1e9 + 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sqlrow.Nanos(tt.in); got != tt.want {
				t.Errorf("Nanos(%v) = %d, want %d", tt.in, got, tt.want)
			}
			back := sqlrow.Time(sqlrow.Nanos(tt.in))
			if !back.Equal(tt.in) || (!back.IsZero() && back.Location() != time.UTC) {
				t.Errorf("Time(Nanos(%v)) = %v, want the same instant in UTC", tt.in, back)
			}
			if tt.in.IsZero() && back != (time.Time{}) {
				t.Errorf("Time(Nanos(zero)) = %#v, want time.Time{}", back)
			}
		})
	}
}

func TestNullable(t *testing.T) {
	at := time.Unix(100, 5)
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"NullNanos(nil)", sqlrow.NullNanos(nil), nil},
		{"NullNanos(t)", sqlrow.NullNanos(&at), at.UnixNano()},
		{"NullString(empty)", sqlrow.NullString(""), nil},
		{"NullString(x)", sqlrow.NullString("x"), "x"},
		{"Blob(nil)", sqlrow.Blob(nil), nil},
		{"Blob(empty)", sqlrow.Blob([]byte{}), []byte{}},
		{"Blob(x)", sqlrow.Blob([]byte(`{"a": 1}`)), []byte(`{"a": 1}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
			}
		})
	}
	if got := sqlrow.NullTime(sql.NullInt64{}); got != nil {
		t.Errorf("NullTime(NULL) = %v, want nil", got)
	}
	if got := sqlrow.NullTime(sql.NullInt64{Int64: at.UnixNano(), Valid: true}); got == nil || !got.Equal(at) {
		t.Errorf("NullTime(%d) = %v, want %v", at.UnixNano(), got, at)
	}
}

func TestEventCodec(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name string
		e    chorus.Event
	}{
		{"metadata only", chorus.Event{Type: "document_removed", ID: 3, ObjectSID: "ET1", DateCreated: time.Unix(1, 2).UTC()}},
		{"verbatim data", chorus.Event{Type: "document_updated", ID: 4, ObjectSID: "ET1",
			Data: json.RawMessage("{ \"b\":2,  \"a\" : \"<&>\" }"), DateCreated: time.Unix(3, 0).UTC(), DateExpires: &exp}},
		{"item data", chorus.Event{Type: "list_item_added", ID: 5, ObjectSID: "ES1", ItemIndex: 7,
			Data: json.RawMessage(`{}`), ItemData: json.RawMessage("[1,\n 2]"), DateCreated: time.Unix(4, 0).UTC()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, data, itemData, err := sqlrow.EncodeEvent(&tt.e)
			if err != nil {
				t.Fatalf("EncodeEvent(%+v) = %v", tt.e, err)
			}
			var meta map[string]any
			if err := json.Unmarshal([]byte(body), &meta); err != nil {
				t.Fatalf("EncodeEvent body %q: %v", body, err)
			}
			if _, ok := meta["data"]; ok {
				t.Errorf("EncodeEvent body = %s, want no data", body)
			}
			if _, ok := meta["item_data"]; ok {
				t.Errorf("EncodeEvent body = %s, want no item_data", body)
			}
			if want := sqlrow.Blob(tt.e.Data); !reflect.DeepEqual(data, want) {
				t.Errorf("EncodeEvent data = %#v, want %#v", data, want)
			}
			if want := sqlrow.Blob(tt.e.ItemData); !reflect.DeepEqual(itemData, want) {
				t.Errorf("EncodeEvent itemData = %#v, want %#v", itemData, want)
			}
			// As read back: NULL is a nil []byte.
			d, _ := data.([]byte)
			id, _ := itemData.([]byte)
			got, err := sqlrow.ScanEvent(fakeRow{body, d, id})
			if err != nil {
				t.Fatalf("ScanEvent = %v", err)
			}
			if !reflect.DeepEqual(*got, tt.e) {
				t.Errorf("ScanEvent(EncodeEvent(e)) = %+v, want %+v", *got, tt.e)
			}
		})
	}
	if _, err := sqlrow.DecodeEvent("{", nil, nil); err == nil {
		t.Errorf("DecodeEvent(%q) = nil error, want one", "{")
	}
}

func TestScanObject(t *testing.T) {
	exp := time.Unix(50, 0).UTC()
	tests := []struct {
		name string
		row  fakeRow
		want chorus.Object
	}{
		{"nulls",
			fakeRow{"document", "ET1", "AC1", "IS1", nil, int64(2), nil, int64(9), int64(0), "alice", int64(10), int64(20), nil},
			chorus.Object{Kind: "document", SID: "ET1", AccountSID: "AC1", ServiceSID: "IS1", Revision: 2,
				LastEventID: 9, CreatedBy: "alice", DateCreated: time.Unix(0, 10).UTC(), DateUpdated: time.Unix(0, 20).UTC()}},
		{"values",
			fakeRow{"list", "ES1", "AC1", "IS1", "name", int64(3), []byte(`{"x": 1}`), int64(4), int64(5), "bob", math.MinInt64, int64(20), exp.UnixNano()},
			chorus.Object{Kind: "list", SID: "ES1", AccountSID: "AC1", ServiceSID: "IS1", UniqueName: "name", Revision: 3,
				Data: json.RawMessage(`{"x": 1}`), LastEventID: 4, NextIndex: 5, CreatedBy: "bob",
				DateUpdated: time.Unix(0, 20).UTC(), DateExpires: &exp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sqlrow.ScanObject(tt.row)
			if err != nil {
				t.Fatalf("ScanObject(%v) = %v", tt.row, err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("ScanObject(%v) = %+v, want %+v", tt.row, *got, tt.want)
			}
		})
	}
}

func TestCollect(t *testing.T) {
	perm := func(id string) fakeRow { return fakeRow{"ET1", id, true, false, true} }
	rows := &fakeRows{rows: []fakeRow{perm("a"), perm("b")}}
	got, err := sqlrow.Collect(rows, sqlrow.ScanPermission)
	if err != nil {
		t.Fatalf("Collect = %v", err)
	}
	want := []*chorus.Permission{
		{ObjectSID: "ET1", Identity: "a", Read: true, Manage: true},
		{ObjectSID: "ET1", Identity: "b", Read: true, Manage: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Collect = %+v, want %+v", got, want)
	}

	boom := errors.New("boom")
	if _, err := sqlrow.Collect(&fakeRows{rows: []fakeRow{perm("a")}, err: boom}, sqlrow.ScanPermission); !errors.Is(err, boom) {
		t.Errorf("Collect(rows failing with %v) = %v, want it", boom, err)
	}
	if _, err := sqlrow.Collect(&fakeRows{rows: []fakeRow{{"short"}}}, sqlrow.ScanPermission); err == nil {
		t.Errorf("Collect(row of 1 column) = nil error, want a scan error")
	}
}
