package server

import (
	"crypto/rand"
	"encoding/base32"
	"net/http"
	"regexp"

	mrand "math/rand/v2"

	"github.com/chorus-sync/chorus"
)

// IdentitySource decides who the caller of /token is when it does not
// present a token to renew. A real app authenticates the request (session
// cookie, OAuth, ...); the quickstart hands out random names.
type IdentitySource interface {
	Identity(r *http.Request) (string, error)
}

// IdentityFunc adapts a function to IdentitySource.
type IdentityFunc func(r *http.Request) (string, error)

// Identity calls f.
func (f IdentityFunc) Identity(r *http.Request) (string, error) { return f(r) }

// RandomIdentity gives every caller a new random identity such as
// "BraveOtter-k2mq3x7fz5n4wd6ehr1c": a friendly adjective and animal for
// people to tell players apart, then 96 random bits (20 base32 digits) so
// that two callers never get the same identity. It never honours a name
// the caller asks for: a page keeps its identity across renewals by
// presenting its still-valid token to /token instead.
type RandomIdentity struct{}

// RandomIdentityBits is the entropy of a RandomIdentity beyond its words.
const RandomIdentityBits = 96

var (
	adjectives = []string{
		"Awesome", "Bold", "Brave", "Brilliant", "Bright", "Calm", "Clever", "Cosmic", "Curious", "Daring",
		"Eager", "Fancy", "Fearless", "Friendly", "Gentle", "Glorious", "Happy", "Honest", "Jolly", "Kind",
		"Lively", "Lucky", "Mighty", "Nimble", "Noble", "Proud", "Quick", "Quiet", "Radiant", "Shiny",
		"Smart", "Speedy", "Steady", "Sunny", "Swift", "Tidy", "Vivid", "Wise", "Witty", "Zesty",
	}
	animals = []string{
		"Badger", "Bear", "Beaver", "Bison", "Cat", "Cheetah", "Dolphin", "Eagle", "Falcon", "Fox",
		"Gecko", "Giraffe", "Hawk", "Hedgehog", "Heron", "Koala", "Lemur", "Lion", "Lynx", "Marmot",
		"Moose", "Otter", "Owl", "Panda", "Panther", "Parrot", "Penguin", "Puffin", "Rabbit", "Raven",
		"Seal", "Sparrow", "Squirrel", "Tiger", "Turtle", "Walrus", "Whale", "Wolf", "Wombat", "Zebra",
	}
	// randomIdentityRE matches what RandomIdentity returns.
	randomIdentityRE = regexp.MustCompile(`^[A-Z][a-z]+[A-Z][a-z]+-[0-9a-hjkmnp-tv-z]{20}$`)
	identityEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)
)

// Identity returns a new random identity; r is not consulted.
func (RandomIdentity) Identity(*http.Request) (string, error) {
	var b [RandomIdentityBits / 8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return adjectives[mrand.IntN(len(adjectives))] + animals[mrand.IntN(len(animals))] + "-" +
		identityEncoding.EncodeToString(b[:]), nil
}

// reservedIdentity reports whether /token must never mint id: the identity
// of REST changes ("system", in any case) and an empty one.
func reservedIdentity(id string) bool { return chorus.ReservedIdentity(id) }
