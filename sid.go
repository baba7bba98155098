package chorus

import (
	"crypto/rand"
	"encoding/hex"
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

// NewSID returns a random SID with the given two-letter prefix.
func NewSID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + hex.EncodeToString(b[:])
}

// LooksLikeSID reports whether s has the shape Twilio reserves for SIDs,
// ^[A-Z]{2}[a-f0-9]{32}$; unique names must not have it, so that a path
// segment that looks like a SID is a SID. A loop, not a regexp: REST
// requests check a few SIDs each.
func LooksLikeSID(s string) bool {
	if len(s) != 34 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// IsSID reports whether s is a SID with the given prefix.
func IsSID(prefix, s string) bool {
	return len(s) == 34 && s[:2] == prefix && LooksLikeSID(s)
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
