package chorus_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func TestParseRevision(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1e", 30, true},
		{`"1e"`, 30, true},
		{`W/"1f"`, 31, true},
		{"1E", 30, true},
		{"", 0, false},
		{`""`, 0, false},
		{"-1", 0, false},
		{"xyz", 0, false},
		{"ffffffffffffffffff", 0, false},
	}
	for _, tt := range tests {
		got, err := chorus.ParseRevision(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseRevision(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && chorus.ErrorCode(err) != 54003 {
			t.Errorf("ParseRevision(%q) error code = %d, want 54003", tt.in, chorus.ErrorCode(err))
		}
		if tt.ok && chorus.FormatRevision(got) != strings.ToLower(strings.Trim(strings.TrimPrefix(tt.in, "W/"), `"`)) {
			t.Errorf("FormatRevision(%d) = %q does not round-trip %q", got, chorus.FormatRevision(got), tt.in)
		}
	}
}

func TestSIDs(t *testing.T) {
	for _, k := range chorus.Kinds {
		sid := chorus.NewSID(k.Prefix())
		if !chorus.IsSID(k.Prefix(), sid) || !chorus.LooksLikeSID(sid) {
			t.Errorf("NewSID(%s) = %q is not a SID", k.Prefix(), sid)
		}
		if got, ok := chorus.KindOfSID(sid); !ok || got != k {
			t.Errorf("KindOfSID(%q) = %v, %v; want %v", sid, got, ok, k)
		}
	}
	for _, s := range []string{"ET" + strings.Repeat("A", 32), "et" + strings.Repeat("a", 32), "ET" + strings.Repeat("a", 31), "game"} {
		if chorus.LooksLikeSID(s) {
			t.Errorf("LooksLikeSID(%q) = true", s)
		}
	}
	if a, b := chorus.NewSID("IS"), chorus.NewSID("IS"); a == b {
		t.Errorf("two NewSID calls returned %q", a)
	}
}

// TestLooksLikeSIDMatchesPattern: the loop accepts exactly what the
// pattern it replaced, ^[A-Z]{2}[a-f0-9]{32}$, accepts, on strings one
// edit away from SIDs (each position set to a character at or next to the
// edges of the allowed ranges, lengths 33 to 35, a trailing newline).
func TestLooksLikeSIDMatchesPattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Z]{2}[a-f0-9]{32}$`)
	base := chorus.NewSID("ET")
	edges := "@AZ[`az{/09:fgFG\n\x00\xff"
	cases := []string{base, base[:33], base + "0", base + "\n", "\n" + base[1:], "", "ET"}
	for i := range len(base) {
		for j := range len(edges) {
			cases = append(cases, base[:i]+edges[j:j+1]+base[i+1:])
		}
	}
	for _, s := range cases {
		if got, want := chorus.LooksLikeSID(s), pattern.MatchString(s); got != want {
			t.Errorf("LooksLikeSID(%q) = %v, the pattern says %v", s, got, want)
		}
		if got, want := chorus.IsSID("ET", s), pattern.MatchString(s) && strings.HasPrefix(s, "ET"); got != want {
			t.Errorf("IsSID(ET, %q) = %v, want %v", s, got, want)
		}
	}
}

func TestNewSecret(t *testing.T) {
	seen := map[byte]int{}
	for range 200 {
		s := chorus.NewSecret(32)
		if len(s) != 32 {
			t.Fatalf("NewSecret(32) has %d characters", len(s))
		}
		for i := range len(s) {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				t.Fatalf("NewSecret(32) = %q has %q", s, c)
			}
			seen[c]++
		}
	}
	if len(seen) != 62 {
		t.Errorf("6400 secret characters used %d of the 62 letters and digits", len(seen))
	}
}

func TestErrors(t *testing.T) {
	wrapped := fmt.Errorf("sqlite: get: %w", chorus.Wrap(chorus.ErrDocumentNotFound, errors.New("no rows")))
	if !errors.Is(wrapped, chorus.ErrDocumentNotFound) || errors.Is(wrapped, chorus.ErrListNotFound) {
		t.Error("errors.Is does not match on the Twilio code")
	}
	e := chorus.AsError(wrapped)
	if e.Status != 404 || e.Code != 54100 || e.MoreInfo() != "https://www.twilio.com/docs/errors/54100" {
		t.Errorf("AsError = %+v", e)
	}
	if e := chorus.AsError(errors.New("disk on fire")); e.Status != 500 || e.Code != 20500 || strings.Contains(e.Message, "fire") {
		t.Errorf("AsError(plain error) = %+v; want a generic 500 that hides the cause", e)
	}
	if chorus.ErrorCode(errors.New("x")) != 0 {
		t.Error("ErrorCode of a plain error is not 0")
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if chorus.ExpiresAt(now, 0) != nil {
		t.Error("ExpiresAt(0) is not nil: a TTL of 0 means never")
	}
	o := &chorus.Object{DateExpires: chorus.ExpiresAt(now, 10)}
	if o.Expired(now.Add(9*time.Second)) || !o.Expired(now.Add(10*time.Second)) {
		t.Error("an object expires exactly at its DateExpires")
	}
}

// BenchmarkIsSID checks a service SID, as every REST request does a few
// times, against the regexp it replaced.
func BenchmarkIsSID(b *testing.B) {
	sid := chorus.NewSID("IS")
	b.Run("impl=loop", func(b *testing.B) {
		for b.Loop() {
			if !chorus.IsSID("IS", sid) {
				b.Fatal(sid)
			}
		}
	})
	pattern := regexp.MustCompile(`^[A-Z]{2}[a-f0-9]{32}$`)
	b.Run("impl=regexp", func(b *testing.B) {
		for b.Loop() {
			if !pattern.MatchString(sid) {
				b.Fatal(sid)
			}
		}
	})
}

// TestCompactJSON: the one check every way into a store applies to data.
func TestCompactJSON(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"{ \"a\" : [1, 2] ,\n\"b\":\"x y\" }", `{"a":[1,2],"b":"x y"}`, true},
		{`{"nul":"\u0000"}`, `{"nul":"\u0000"}`, true},
		{`"just a string"`, `"just a string"`, true}, // callers decide what kind of value they take
		{"{\"a\":\"\xff\"}", "", false},              // not UTF-8
		{`{"a":1}}`, "", false},                      // trailing garbage
		{`{"a":}`, "", false},
		{"", "", false},
	} {
		got, ok := chorus.CompactJSON([]byte(c.in))
		if ok != c.ok || string(got) != c.want {
			t.Errorf("CompactJSON(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
