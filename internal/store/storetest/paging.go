package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/chorus-sync/chorus"
)

// Backward paging, shared by the services, objects and permissions tests.

// walkBackward pages backwards from the end (the zero cursor) until a short
// page, and returns the rows in ascending order. fetch reads at most limit
// rows before after, newest first.
func walkBackward[T any, C any](t testing.TB, what string, limit, maxPages int, fetch func(after C) []*T, cursorOf func(*T) C) []*T {
	t.Helper()
	var all []*T
	var cur C
	for pages := 0; ; pages++ {
		if pages > maxPages {
			t.Fatalf("%s: no start after %d pages", what, pages)
		}
		page := fetch(cur)
		if len(page) > limit {
			t.Fatalf("%s(limit %d) returned %d", what, limit, len(page))
		}
		all = append(all, page...)
		if len(page) < limit {
			break
		}
		cur = cursorOf(page[len(page)-1])
	}
	slices.Reverse(all)
	return all
}

// checkBefore reads backwards from every probe and checks that the page is
// the (at most) limit rows of want that precede it, newest first. want is
// in ascending order; before reports whether a row precedes a probe.
func checkBefore[T any, C any](t *testing.T, what string, want []*T, limit int, probes []C, before func(*T, C) bool, fetch func(after C) []*T) {
	t.Helper()
	for i, c := range probes {
		var w []*T
		for _, x := range want {
			if before(x, c) {
				w = append(w, x)
			}
		}
		w = w[max(0, len(w)-limit):]
		slices.Reverse(w)
		checkList(t, fmt.Sprintf("%s(before probe %d %+v, limit %d)", what, i, c, limit), fetch(c), w)
	}
}

// cursorBefore reports whether (DateCreated, SID) a sorts before c.
func cursorBefore(a, c chorus.Cursor) bool {
	if !a.DateCreated.Equal(c.DateCreated) {
		return a.DateCreated.Before(c.DateCreated)
	}
	return a.SID < c.SID
}

func serviceCursor(s *chorus.Service) chorus.Cursor {
	return chorus.Cursor{DateCreated: s.DateCreated, SID: s.SID}
}

func objectCursor(o *chorus.Object) chorus.Cursor {
	return chorus.Cursor{DateCreated: o.DateCreated, SID: o.SID}
}
