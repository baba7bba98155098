package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// TestConsoleSessionMaxAge: renewing a console session keeps its sign-in
// time, so a captured session that is renewed forever still dies
// ConsoleSessionMaxAge after the sign-in.
func TestConsoleSessionMaxAge(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, _, _, err := f.eng.NewConsoleSession(ctx, f.creds.AccountSID, f.creds.AuthToken)
	if err != nil {
		t.Fatal(err)
	}
	limit := f.clock.Now().Add(engine.ConsoleSessionMaxAge)
	renewals := 0
	for {
		f.clock.Advance(engine.ConsoleSessionTTL - time.Minute)
		next, _, exp, err := f.eng.RenewConsoleSession(ctx, tok)
		if err != nil {
			if chorus.ErrorCode(err) != chorus.ErrAuthenticate.Code {
				t.Fatalf("RenewConsoleSession = %v, want 20003", err)
			}
			break
		}
		if exp.After(limit) {
			t.Fatalf("renewal %d expires at %v, after the limit %v", renewals, exp, limit)
		}
		tok = next
		if renewals++; renewals > 100 {
			t.Fatalf("still renewing after %d renewals (%v)", renewals, f.clock.Now().Sub(limit.Add(-engine.ConsoleSessionMaxAge)))
		}
	}
	if f.clock.Now().Before(limit.Add(-engine.ConsoleSessionTTL)) {
		t.Errorf("renewal refused at %v before the limit %v", f.clock.Now(), limit)
	}
	if _, err := f.eng.AuthenticateSession(ctx, tok); err == nil && !f.clock.Now().Before(limit) {
		t.Errorf("the last session still authenticates after the limit")
	}
	f.clock.Advance(engine.ConsoleSessionTTL)
	if _, err := f.eng.AuthenticateSession(ctx, tok); chorus.ErrorCode(err) != chorus.ErrAuthenticate.Code {
		t.Errorf("the last session after the limit = %v, want 20003", err)
	}
}
