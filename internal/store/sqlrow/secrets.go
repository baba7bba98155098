package sqlrow

import (
	"crypto/sha256"
	"encoding/hex"
)

// SecretDigest is how the stores remember a retired secret (an auth token
// or API key secret replaced or dropped): its SHA-256, never the secret.
// The secrets are random (at least 32 characters), so the digest does not
// give them away; it only lets a store recognise one when it comes back.
func SecretDigest(secret string) string {
	sum := sha256.Sum256([]byte("chorus retired secret\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// Retired returns the secrets of was that now no longer has: the auth
// tokens an account update replaced or dropped, or an API key's old
// secret. Empty ones are not secrets.
func Retired(was, now []string) []string {
	var out []string
	for _, s := range was {
		if s == "" {
			continue
		}
		kept := false
		for _, n := range now {
			kept = kept || n == s
		}
		if !kept {
			out = append(out, s)
		}
	}
	return out
}
