package sqlrow

import (
	"testing"
	"time"
)

// The base is 1,000 times the time in ms, below 2^53 until the year
// 2255; a rebase past 2^53 is refused.
func TestRenumberBaseAndCheck(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if got, want := RenumberBase(now), 1000*now.UnixMilli(); got != want {
		t.Errorf("RenumberBase = %d, want %d", got, want)
	}
	if y := time.UnixMilli(MaxEventID / RenumberPerMilli).UTC().Year(); y < 2250 {
		t.Errorf("bases pass 2^53 in %d", y)
	}
	if err := RenumberCheck(MaxEventID); err != nil {
		t.Errorf("RenumberCheck at the limit = %v, want nil", err)
	}
	if err := RenumberCheck(MaxEventID + 1); err == nil {
		t.Error("RenumberCheck past 2^53 = nil, want an error")
	}
}
