package sqlrow

import (
	"testing"
	"time"
)

// The shift is twice the time in ms whatever the ids held (restores add
// up), and a shift past what the SDKs read exactly (2^53) is refused.
func TestRenumberShiftAndCheck(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	shift := RenumberShift(now)
	if shift != 2*now.UnixMilli()+1 {
		t.Errorf("RenumberShift = %d, want 2·ms+1", shift)
	}
	if err := RenumberCheck(5, shift); err != nil {
		t.Errorf("RenumberCheck(5) = %v", err)
	}
	if err := RenumberCheck(MaxEventID-shift, shift); err != nil {
		t.Errorf("RenumberCheck at the limit = %v, want nil", err)
	}
	if err := RenumberCheck(MaxEventID-shift+1, shift); err == nil {
		t.Error("RenumberCheck past 2^53 = nil, want an error")
	}
	// ~2,500 restores fit below 2^53 at today's time.
	if n := MaxEventID / shift; n < 2000 {
		t.Errorf("%d restores fit below 2^53, the README says about two thousand", n)
	}
}
