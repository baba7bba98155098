package transfer

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/chorus-sync/chorus"
)

// A list's or map's items are compared and copied without holding them
// whole, on either side:
//
//   - The source is read a page at a time (Reader.Items). Each page is
//     checked (checkItems), and the target's copies of its items are
//     looked up by index or key in one statement (ReadTx.ItemsOf): the
//     source's key order (Twilio's collation) need not be the target
//     store's, so pages are never matched by position.
//   - Items that differ wait in a spool: in memory up to 8 MiB of them
//     (Options.spoolMem), then in a temporary file (Options.TempDir).
//   - The target's items are then paged in the store's own order; those
//     whose index or key the source did not list are to be deleted. This
//     pass also finds the highest event id the target's items hold: the
//     object's LastEventID does not bound them after an interrupted import
//     (its items are written before its row), so event ids continue above
//     both, as before.
//   - Only then, once every page of the source was read and checked, is
//     anything written: an invalid item on the last page refuses the
//     object before any of it is written, as when the items were read
//     whole, and the items written are exactly those that were checked.
//     The price is the spool's disk space for what differs (nothing for an
//     unchanged object); writing each page as it is checked would have
//     left a refused object's earlier pages written.
//
// What stays in memory per object is a page of items, the spool's memory
// part and, for an object the target has, one ItemRef per source item (to
// find the deletions) and per item to delete.

// targetPage is how many target items one read of the deletion pass takes.
const targetPage = 500

// defaultSpoolMem is how many bytes of items an object's spool holds in
// memory before it moves to a file.
const defaultSpoolMem = 8 << 20

// itemOverhead is what a chorus.Item costs in memory beyond its data, key
// and creator (the struct, its times, the slice's pointer, the map's
// share), measured.
const itemOverhead = 220

// itemDiff is what the source's items need written into the target.
type itemDiff struct {
	counts    Counts
	puts      *spool           // items to write, in the source's order, without event ids yet
	dels      []chorus.ItemRef // target items the source does not have
	maxEvent  int64            // the highest LastEventID of the target's items
	nextIndex int64            // lists: above every source index
}

// errInvalidItems stops reading a source whose items fail checkItems.
var errInvalidItems = errors.New("transfer: invalid items")

// readSourceItems reads the source's items of obj a page at a time into d:
// each page is checked, then compared with the target's copies (when the
// target has the object, old != nil). seen, unless nil, collects the refs
// of the source's items. invalid is checkItems' error for a page that fails it
// (the reading stops there); err is any other error, source errors
// wrapped so that goneOr sees them.
func (im *importer) readSourceItems(ctx context.Context, obj, old *chorus.Object, d *itemDiff, seen map[chorus.ItemRef]struct{}) (invalid, err error) {
	var local error // an error of the target or the spool, not of the source
	err = im.src.Items(ctx, obj, func(page []*chorus.Item) error {
		if err := checkItems(page); err != nil {
			invalid = err
			return errInvalidItems
		}
		var have map[chorus.ItemRef]*chorus.Item
		if old != nil {
			if have, local = im.lookupItems(ctx, obj, page); local != nil {
				return local
			}
		}
		for _, it := range page {
			ref := itemRef(it)
			if seen != nil {
				seen[ref] = struct{}{}
			}
			if it.Kind == chorus.KindList {
				d.nextIndex = max(d.nextIndex, it.Index+1)
			}
			switch cur := have[ref]; {
			case cur != nil && sameItem(cur, it, im.prec):
				d.counts.Unchanged++
				continue
			case cur != nil:
				d.counts.Updated++
			default:
				d.counts.Created++
			}
			if local = d.puts.add(it); local != nil {
				return local
			}
		}
		return nil
	})
	switch {
	case invalid != nil:
		return invalid, nil
	case local != nil:
		return nil, local
	case err != nil:
		return nil, fmt.Errorf("read items: %w", err)
	}
	return nil, nil
}

// lookupItems returns the target's items of obj with the refs of page,
// read in one statement (a round trip per item took a page of 1,000 past
// PostgreSQL's 10 s transaction timeout at a 10 ms round trip).
func (im *importer) lookupItems(ctx context.Context, obj *chorus.Object, page []*chorus.Item) (map[chorus.ItemRef]*chorus.Item, error) {
	refs := make([]chorus.ItemRef, len(page))
	for i, it := range page {
		refs[i] = itemRef(it)
	}
	var found []*chorus.Item
	err := im.st.View(ctx, func(tx chorus.ReadTx) (err error) {
		found, err = tx.ItemsOf(ctx, obj.SID, refs)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read target items: %w", err)
	}
	have := make(map[chorus.ItemRef]*chorus.Item, len(found))
	for _, it := range found {
		have[itemRef(it)] = it
	}
	return have, nil
}

// pageTarget calls fn with the target's items of obj (expired ones too),
// targetPage at a time in the store's order, each page read in its own
// transaction.
func (im *importer) pageTarget(ctx context.Context, obj *chorus.Object, fn func([]*chorus.Item)) error {
	q := chorus.ItemQuery{Kind: obj.Kind, Limit: targetPage}
	for {
		var page []*chorus.Item
		err := im.st.View(ctx, func(tx chorus.ReadTx) error {
			var err error
			page, err = tx.Items(ctx, obj.SID, q)
			return err
		})
		if err != nil {
			return fmt.Errorf("read target items: %w", err)
		}
		fn(page)
		if len(page) < targetPage {
			return nil
		}
		last := page[len(page)-1]
		q.HasFrom, q.FromIndex, q.FromKey = true, last.Index, last.Key
	}
}

// spool holds the items an object's copy will write, in the order added:
// in memory up to max bytes (their data, keys and creators, and
// itemOverhead each), then in a temporary file in dir. With
// discard (a dry run) it only counts them.
type spool struct {
	dir     string
	max     int
	discard bool

	n        int
	mem      []*chorus.Item
	bytes    int
	f        *os.File
	unlinked bool
	w        *bufio.Writer
	enc      *gob.Encoder
}

func (s *spool) len() int { return s.n }

func (s *spool) add(it *chorus.Item) error {
	s.n++
	if s.discard {
		return nil
	}
	// An item costs its data, key and creator and itemOverhead more in
	// memory: counted by data alone, 300,000 items of {"a":1} stayed in
	// memory, 62 MiB of them, for 2 MiB of data.
	size := itemOverhead + len(it.Data) + len(it.Key) + len(it.CreatedBy)
	if s.f == nil && s.bytes+size <= s.max {
		s.mem = append(s.mem, it)
		s.bytes += size
		return nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "chorus-import-*.spool")
		if err != nil {
			return fmt.Errorf("spool items: %w", err)
		}
		// Unlinked at once where the system allows it: nothing is left
		// behind by a crash. (Windows refuses; close removes it there.)
		s.f, s.unlinked = f, os.Remove(f.Name()) == nil
		s.w = bufio.NewWriterSize(f, 1<<20)
		s.enc = gob.NewEncoder(s.w)
		for _, m := range s.mem {
			if err := s.enc.Encode(m); err != nil {
				return fmt.Errorf("spool items: %w", err)
			}
		}
		s.mem, s.bytes = nil, 0
	}
	if err := s.enc.Encode(it); err != nil {
		return fmt.Errorf("spool items: %w", err)
	}
	return nil
}

// reader returns a function that returns the items in the order added,
// then io.EOF. It is called once, after the last add.
func (s *spool) reader() (func() (*chorus.Item, error), error) {
	if s.f == nil {
		mem := s.mem
		return func() (*chorus.Item, error) {
			if len(mem) == 0 {
				return nil, io.EOF
			}
			it := mem[0]
			mem[0] = nil // written: no longer held
			mem = mem[1:]
			return it, nil
		}, nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("spool items: %w", err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool items: %w", err)
	}
	dec := gob.NewDecoder(bufio.NewReaderSize(s.f, 1<<20))
	return func() (*chorus.Item, error) {
		it := new(chorus.Item)
		if err := dec.Decode(it); err != nil {
			if err != io.EOF {
				err = fmt.Errorf("read spooled items: %w", err)
			}
			return nil, err
		}
		return it, nil
	}, nil
}

// close releases the spool's memory and file.
func (s *spool) close() {
	s.mem = nil
	if s.f != nil {
		s.f.Close()
		if !s.unlinked {
			os.Remove(s.f.Name())
		}
		s.f = nil
	}
}
