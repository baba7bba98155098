package nats

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/chorus-sync/chorus"
)

// Wire format of one event, version 1. JSON would compact and HTML-escape
// json.RawMessage fields (encoding/json re-encodes Marshaler output), so
// events travel in a small binary form that keeps Data and ItemData
// byte-exact, nil-ness included:
//
//	version  byte (1)
//	flags    byte (flagFromREST | flagExpires | flagData | flagItemData)
//	strings  12 × (uvarint length, bytes): Type, AccountSID, ServiceSID,
//	         ObjectSID, Kind, UniqueName, Revision, ItemKey, ItemRevision,
//	         MessageSID, Identity, EndpointID
//	ID, ItemIndex                 varint
//	DateCreated                   varint Unix seconds, uvarint nanoseconds
//	DateExpires  (flagExpires)    varint Unix seconds, uvarint nanoseconds
//	Data         (flagData)       uvarint length, bytes
//	ItemData     (flagItemData)   uvarint length, bytes
//
// Times decode in UTC. A receiver drops (and counts) payloads of another
// version, so a future version must be rolled out as a new subject prefix
// or be readable by the old decoder.
const codecVersion = 1

const (
	flagFromREST = 1 << iota
	flagExpires
	flagData
	flagItemData
	flagsKnown = flagFromREST | flagExpires | flagData | flagItemData
)

var errShort = errors.New("truncated")

// numStrings is the number of string fields, which lead the encoding.
const numStrings = 12

// Times outside years 1 to 9999 are rejected: they do not round-trip
// through time.Time.
const (
	minUnix = -62135596800 // 0001-01-01T00:00:00Z, the zero time.Time
	maxUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// appendEvent appends the encoding of e to b.
func appendEvent(b []byte, e *chorus.Event) []byte {
	var flags byte
	if e.FromREST {
		flags |= flagFromREST
	}
	if e.DateExpires != nil {
		flags |= flagExpires
	}
	if e.Data != nil {
		flags |= flagData
	}
	if e.ItemData != nil {
		flags |= flagItemData
	}
	b = append(b, codecVersion, flags)
	for _, s := range [...]string{
		string(e.Type), e.AccountSID, e.ServiceSID, e.ObjectSID, string(e.Kind), e.UniqueName,
		e.Revision, e.ItemKey, e.ItemRevision, e.MessageSID, e.Identity, e.EndpointID,
	} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, e.ID)
	b = binary.AppendVarint(b, e.ItemIndex)
	b = appendTime(b, e.DateCreated)
	if e.DateExpires != nil {
		b = appendTime(b, *e.DateExpires)
	}
	if e.Data != nil {
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
	}
	if e.ItemData != nil {
		b = binary.AppendUvarint(b, uint64(len(e.ItemData)))
		b = append(b, e.ItemData...)
	}
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// decodeEvent decodes one event. The returned event's strings share one
// allocation and its Data and ItemData alias p, which the caller must not
// modify afterwards.
func decodeEvent(p []byte) (*chorus.Event, error) {
	if len(p) < 2 {
		return nil, fmt.Errorf("decode event: %w", errShort)
	}
	if p[0] != codecVersion {
		return nil, fmt.Errorf("decode event: unknown version %d", p[0])
	}
	flags := p[1]
	if flags&^flagsKnown != 0 {
		return nil, fmt.Errorf("decode event: unknown flags %#x", flags)
	}
	// The strings come first: copy just them, as one string.
	end := 2
	for range numStrings {
		n, k := binary.Uvarint(p[end:])
		if k <= 0 || n > uint64(len(p)-end-k) {
			return nil, fmt.Errorf("decode event: %w", errShort)
		}
		end += k + int(n)
	}
	d := decoder{p: p, s: string(p[:end]), off: 2}
	e := &chorus.Event{
		Type:         chorus.EventType(d.str()),
		AccountSID:   d.str(),
		ServiceSID:   d.str(),
		ObjectSID:    d.str(),
		Kind:         chorus.Kind(d.str()),
		UniqueName:   d.str(),
		Revision:     d.str(),
		ItemKey:      d.str(),
		ItemRevision: d.str(),
		MessageSID:   d.str(),
		Identity:     d.str(),
		EndpointID:   d.str(),
		FromREST:     flags&flagFromREST != 0,
	}
	e.ID = d.varint()
	e.ItemIndex = d.varint()
	e.DateCreated = d.time()
	if flags&flagExpires != 0 {
		t := d.time()
		e.DateExpires = &t
	}
	if flags&flagData != 0 {
		e.Data = d.bytes()
	}
	if flags&flagItemData != 0 {
		e.ItemData = d.bytes()
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode event: %w", d.err)
	}
	if d.off != len(p) {
		return nil, fmt.Errorf("decode event: %d trailing bytes", len(p)-d.off)
	}
	return e, nil
}

// decoder reads fields from p; s is string(p[:n]) for the n bytes up to
// the end of the strings, so that strings are substrings of one
// allocation. After the first error every read returns
// a zero value.
type decoder struct {
	p   []byte
	s   string
	off int
	err error
}

func (d *decoder) length() (int, bool) {
	if d.err != nil {
		return 0, false
	}
	n, k := binary.Uvarint(d.p[d.off:])
	if k <= 0 {
		d.err = errShort
		return 0, false
	}
	d.off += k
	if n > uint64(len(d.p)-d.off) {
		d.err = errShort
		return 0, false
	}
	return int(n), true
}

func (d *decoder) str() string {
	n, ok := d.length()
	if !ok || n == 0 {
		return ""
	}
	s := d.s[d.off : d.off+n]
	d.off += n
	return s
}

func (d *decoder) bytes() []byte {
	n, ok := d.length()
	if !ok {
		return nil
	}
	b := d.p[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Varint(d.p[d.off:])
	if k <= 0 {
		d.err = errShort
		return 0
	}
	d.off += k
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.p[d.off:])
	if k <= 0 {
		d.err = errShort
		return 0
	}
	d.off += k
	return v
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 || sec < minUnix || sec > maxUnix {
		d.err = fmt.Errorf("time %d.%09d out of range", sec, nsec)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}
