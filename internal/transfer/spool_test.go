package transfer

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/chorus-sync/chorus"
)

// Small items fill a spool's memory by their count, not their data alone:
// 100,000 items of {} are some 22 MB in memory though their data is 200 KB.
// They move to the file, and come back whole and in order.
func TestSpoolCountsSmallItems(t *testing.T) {
	s := &spool{dir: t.TempDir(), max: 8 << 20}
	defer s.close()
	const n = 100_000
	for i := range n {
		if err := s.add(&chorus.Item{Kind: chorus.KindMap, Key: fmt.Sprintf("k%d", i), Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if s.f == nil {
		t.Fatalf("%d small items (%d bytes counted) still in memory", len(s.mem), s.bytes)
	}
	read, err := s.reader()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		it, err := read()
		if err != nil || it.Key != fmt.Sprintf("k%d", i) || string(it.Data) != `{}` {
			t.Fatalf("item %d read back = %+v, %v", i, it, err)
		}
	}
}
