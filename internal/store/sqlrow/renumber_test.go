package sqlrow

import (
	"testing"
	"time"
)

// TestRenumberShift: the lowest id becomes 1,000 times the time in ms and
// every id lands above every id held, whatever the ids were; restores do
// not add up; a shift past what the SDKs read exactly (2^53) is refused.
func TestRenumberShift(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ms := t0.UnixMilli()
	if got, want := RenumberShift(t0, 1, 100), RenumberPerMilli*ms-1; got != want {
		t.Errorf("RenumberShift(1..100) = %d, want %d (the lowest id at 1,000·ms)", got, want)
	}
	if got := RenumberShift(t0, 0, 0); got != RenumberPerMilli*ms {
		t.Errorf("RenumberShift of an empty store = %d, want %d", got, RenumberPerMilli*ms)
	}

	// A store restored at t0 and again a day later: the ids are rebased,
	// not moved up twice.
	lo, hi := int64(1)+RenumberShift(t0, 1, 500), int64(500)+RenumberShift(t0, 1, 500)
	t1 := t0.Add(24 * time.Hour)
	s1 := RenumberShift(t1, lo, hi)
	if lo+s1 != RenumberPerMilli*t1.UnixMilli() || hi+s1 != RenumberPerMilli*t1.UnixMilli()+499 {
		t.Errorf("second restore: ids %d..%d, want %d..%d", lo+s1, hi+s1, RenumberPerMilli*t1.UnixMilli(), RenumberPerMilli*t1.UnixMilli()+499)
	}

	// The 3 a.m. sequence: restore the newest backup (a document 14,000
	// writes further on), find it bad, restore the one before 4.6 s later.
	// The older backup's ids must pass what clients saw of the newer.
	newer := int64(14008) + RenumberShift(t0, 1, 14008)
	t2 := t0.Add(4600 * time.Millisecond)
	if older := int64(11) + RenumberShift(t2, 1, 11); older <= newer {
		t.Errorf("older backup restored 4.6 s later: id %d, not above the %d clients saw", older, newer)
	}

	// Ids above 1,000·ms already (a clock set back): still all above.
	big := RenumberPerMilli*ms + 1e9
	if s := RenumberShift(t0, 5, big); 5+s <= big {
		t.Errorf("RenumberShift(5..%d) = %d: lowest id %d not above the highest", big, s, 5+s)
	}

	shift := RenumberShift(t0, 1, 5)
	if err := RenumberCheck(5, shift); err != nil {
		t.Errorf("RenumberCheck(5) = %v", err)
	}
	if err := RenumberCheck(MaxEventID-shift, shift); err != nil {
		t.Errorf("RenumberCheck at the limit = %v, want nil", err)
	}
	if err := RenumberCheck(MaxEventID-shift+1, shift); err == nil {
		t.Error("RenumberCheck past 2^53 = nil, want an error")
	}
	// Below 2^53 until the year 2255.
	if y := time.UnixMilli(MaxEventID / RenumberPerMilli).Year(); y < 2250 {
		t.Errorf("restores pass 2^53 in %d", y)
	}
}
