package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/token"
)

// keyCache remembers the API keys that tokens named, so that init and
// update (a reconnect storm after a node restart) do not read the store
// per token. It never outlives a revocation on this node: RevokeKeys, a
// keys_revoked control event from another node and Resync (the Bus may
// have lost one) empty it, and a lookup that was in flight meanwhile is
// not stored (gen). An entry lives at most keyCacheTTL, which bounds what
// a key deleted behind the gateways' back (straight from the store) may
// still verify. Missing keys are not cached: a new key works at once.
type keyCache struct {
	lookup token.KeyLookup

	mu   sync.Mutex
	gen  uint64 // bumped by invalidate
	keys map[string]keyEntry
}

type keyEntry struct {
	key *chorus.APIKey
	at  time.Time
}

const (
	keyCacheTTL = 10 * time.Second
	keyCacheMax = 4096 // entries; the cache is emptied when full
)

func newKeyCache(lookup token.KeyLookup) *keyCache {
	return &keyCache{lookup: lookup, keys: make(map[string]keyEntry)}
}

// get is a token.KeyLookup.
func (k *keyCache) get(ctx context.Context, sid string) (*chorus.APIKey, error) {
	now := time.Now()
	k.mu.Lock()
	e, ok := k.keys[sid]
	gen := k.gen
	k.mu.Unlock()
	if ok && now.Sub(e.at) < keyCacheTTL {
		return e.key, nil
	}
	key, err := k.lookup(ctx, sid)
	if err != nil || key == nil {
		return key, err
	}
	k.mu.Lock()
	if k.gen == gen {
		if len(k.keys) >= keyCacheMax {
			clear(k.keys)
		}
		k.keys[sid] = keyEntry{key: key, at: now}
	}
	k.mu.Unlock()
	return key, nil
}

// invalidate forgets every key.
func (k *keyCache) invalidate() {
	k.mu.Lock()
	k.gen++
	clear(k.keys)
	k.mu.Unlock()
}
