package server

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
)

// IdentitySource decides who the caller of GET /token is. A real app
// authenticates the request (session cookie, OAuth, ...); the quickstart
// hands out random names.
type IdentitySource interface {
	Identity(r *http.Request) (string, error)
}

// IdentityFunc adapts a function to IdentitySource.
type IdentityFunc func(r *http.Request) (string, error)

// Identity calls f.
func (f IdentityFunc) Identity(r *http.Request) (string, error) { return f(r) }

// RandomIdentity gives every caller a friendly random user name such as
// "BrilliantBear42", like Twilio's quickstart token servers.
type RandomIdentity struct{}

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
)

// Identity returns the name the caller asks for with ?identity= (so that a
// page renewing its token keeps its identity: the gateway refuses an
// updateToken that changes it), or else a new random name: an adjective, an
// animal and a number from 0 to 99. Like Twilio's quickstart, it trusts
// every caller; a real app authenticates instead.
func (RandomIdentity) Identity(r *http.Request) (string, error) {
	if id := r.URL.Query().Get("identity"); id != "" {
		if utf8.RuneCountInString(id) > chorus.MaxIdentityLen || !utf8.ValidString(id) {
			return "", chorus.ErrIdentityInvalid
		}
		return id, nil
	}
	return fmt.Sprintf("%s%s%d",
		adjectives[rand.IntN(len(adjectives))], animals[rand.IntN(len(animals))], rand.IntN(100)), nil
}
