package chorus

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
)

// SID prefixes. A SID is two upper-case letters and 32 lower-case hex digits.
const (
	PrefixAccount       = "AC"
	PrefixAPIKey        = "SK"
	PrefixService       = "IS"
	PrefixDocument      = "ET"
	PrefixList          = "ES"
	PrefixMap           = "MP"
	PrefixStream        = "TO"
	PrefixStreamMessage = "TZ"
	PrefixRequest       = "RQ"
	PrefixFrame         = "TM"
)

// sidPattern is the shape Twilio reserves for SIDs; unique names must not
// match it so that a path segment that looks like a SID is a SID.
var sidPattern = regexp.MustCompile(`^[A-Z]{2}[a-f0-9]{32}$`)

// NewSID returns a random SID with the given two-letter prefix.
func NewSID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + hex.EncodeToString(b[:])
}

// LooksLikeSID reports whether s has the shape of any SID.
func LooksLikeSID(s string) bool { return sidPattern.MatchString(s) }

// IsSID reports whether s is a SID with the given prefix.
func IsSID(prefix, s string) bool {
	return len(s) == 34 && s[:2] == prefix && sidPattern.MatchString(s)
}

// NewSecret returns a random alphanumeric secret of n characters, suitable
// for auth tokens and API key secrets (twilio-go accepts only [a-zA-Z0-9]).
func NewSecret(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		_, _ = rand.Read(buf[:])
		for _, c := range buf {
			// Reject the top of the byte range so every letter is equally likely.
			if c < 248 && len(out) < n {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out)
}
