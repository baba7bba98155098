package server

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// Login throttle policy. Failed authentications (a 401 answer to a request
// that carried an Authorization header) are counted in token buckets per
// client address and per account; while a bucket is empty, requests with
// credentials get 429 (20429) with Retry-After before their credentials are
// checked, so a throttled guesser learns nothing.
//
// The per-address bucket is small: one address can fail a burst of
// AddrBurst times, then once every AddrEvery. The per-account bucket (an
// account's auth tokens and API keys count together) is larger, so that
// only a distributed guesser reaches it. Lock-out risk: a client whose
// address authenticated successfully as that user in the last KnownGoodTTL
// is counted in neither: the (user, address) pair has a bucket of its own
// (KnownGoodBurst, as large as an address's, then one every AddrEvery), so
// a known client is never held back sooner than an unknown one. So neither a flood
// against the account from many addresses nor a guesser sharing the
// client's address (a NAT, the proxy's address without --trusted-proxies)
// locks out the servers already using the account; a guesser that names
// the known user from the known address gets that small bucket only.
//
// While an address or account has a bucket (it failed recently), each of
// its requests holds a token while its credentials are checked, given back
// unless they fail: concurrent guesses cannot overtake the count. A bucket
// that has refilled is dropped, so clients that never fail are not limited
// in concurrency.
//
// Every table is bounded (throttleMaxEntries); when one is full, buckets
// that have refilled are dropped first, then arbitrary ones.
const (
	AddrBurst          = 50
	AddrEvery          = 2 * time.Second
	AccountBurst       = 100
	AccountEvery       = time.Second
	KnownGoodTTL       = 24 * time.Hour
	KnownGoodBurst     = AddrBurst
	throttleMaxEntries = 1 << 14
)

// throttle is the table of login buckets; safe for concurrent use.
type throttle struct {
	mu       sync.Mutex
	addrs    buckets
	accounts buckets
	pairs    buckets              // known-good user + " " + address
	aliases  map[string]string    // API key SID → its account SID, learnt from failures
	good     map[string]time.Time // user + " " + address → last successful login
	max      int

	failures, refused atomic.Uint64
	logLines          bucket // log lines about failed logins: 20, then 10/s
}

func newThrottle() *throttle {
	return &throttle{
		addrs:    buckets{every: AddrEvery, burst: AddrBurst, m: map[string]*bucket{}},
		accounts: buckets{every: AccountEvery, burst: AccountBurst, m: map[string]*bucket{}},
		pairs:    buckets{every: AddrEvery, burst: KnownGoodBurst, m: map[string]*bucket{}},
		aliases:  map[string]string{},
		good:     map[string]time.Time{},
		max:      throttleMaxEntries,
		logLines: bucket{tokens: 20},
	}
}

// ticket is what admit reserved for one request: a token of the address's
// and of the account's bucket, or for a known-good pair of the pair's
// (nil where there was no bucket).
type ticket struct {
	addr, acct, pair *bucket
	acctKey, pairKey string // pairKey != "": a known-good pair
}

// admit decides whether a request from addr with Basic user may have its
// credentials checked now. If not, it returns how long to wait. If so, the
// ticket holds a token of each existing bucket until settle.
func (t *throttle) admit(addr, user string, now time.Time) (ticket, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var tk ticket
	if k := user + " " + addr; user != "" {
		if at, ok := t.good[k]; ok && now.Sub(at) < KnownGoodTTL {
			// Known clients are held back by neither the address's nor
			// the account's bucket, only by their own.
			r, d := t.pairs.reserve(k, now)
			if d > 0 {
				return tk, d
			}
			tk.pair, tk.pairKey = r, k
			return tk, 0
		}
	}
	r, d := t.addrs.reserve(addr, now)
	if d > 0 {
		return tk, d
	}
	tk.addr = r
	if user == "" {
		return tk, 0
	}
	acct := user
	if a, ok := t.aliases[user]; ok {
		acct = a
	}
	r, d = t.accounts.reserve(acct, now)
	if d > 0 {
		t.addrs.giveBack(tk.addr)
		return ticket{}, d
	}
	tk.acct, tk.acctKey = r, acct
	return tk, 0
}

// settle gives back the tokens of a request whose credentials did not fail.
func (t *throttle) settle(tk ticket) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addrs.giveBack(tk.addr)
	t.accounts.giveBack(tk.acct)
	t.pairs.giveBack(tk.pair)
}

// wait is how long a request from addr with Basic user must wait (admit
// without reserving).
func (t *throttle) wait(addr, user string, now time.Time) time.Duration {
	tk, d := t.admit(addr, user, now)
	t.settle(tk)
	return d
}

// fail counts a failed login from addr; account is "" when the user names
// no account or key. Tokens tk holds are kept as the failures' cost.
func (t *throttle) fail(tk ticket, addr, user, account string, now time.Time) {
	t.failures.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case tk.pairKey != "":
		if tk.pair == nil {
			t.pairs.take(tk.pairKey, now, t.max)
		}
		return
	case tk.addr == nil:
		t.addrs.take(addr, now, t.max)
	}
	if tk.acct != nil && tk.acctKey != account {
		t.accounts.giveBack(tk.acct) // reserved on the user before its account was known
		tk.acct = nil
	}
	if account == "" {
		return
	}
	if user != account {
		if len(t.aliases) >= t.max {
			clear(t.aliases)
		}
		t.aliases[user] = account
	}
	if tk.acct == nil {
		t.accounts.take(account, now, t.max)
	}
}

// knownGood reports that addr authenticated as user in the last hour.
func (t *throttle) knownGood(addr, user string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.good[user+" "+addr]
	return ok && now.Sub(at) < time.Hour
}

// succeeded remembers that addr authenticated as user.
func (t *throttle) succeeded(addr, user string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := user + " " + addr
	if _, ok := t.good[k]; !ok && len(t.good) >= t.max {
		for g, at := range t.good {
			if now.Sub(at) >= KnownGoodTTL {
				delete(t.good, g)
			}
		}
		for g := range t.good { // map order is random
			if len(t.good) < t.max*3/4 {
				break
			}
			delete(t.good, g)
		}
	}
	t.good[k] = now
}

// logAllowed reports whether a failed login may be logged now.
func (t *throttle) logAllowed(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.logLines.refill(now, 100*time.Millisecond, 20)
	if t.logLines.tokens < 1 {
		return false
	}
	t.logLines.tokens--
	return true
}

// bucket is a token bucket; buckets says how it refills.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, every time.Duration, burst int) {
	if now.After(b.last) {
		b.tokens = min(float64(burst), b.tokens+float64(now.Sub(b.last))/float64(every))
		b.last = now
	}
}

// buckets is a bounded map of token buckets of burst tokens, one more
// every every; the caller holds the throttle's lock.
type buckets struct {
	every time.Duration
	burst int
	m     map[string]*bucket
}

// reserve takes a token of key's bucket, if it has one, or returns how
// long until one is available. A bucket that has refilled is dropped: its
// key has not failed for a while.
func (b *buckets) reserve(key string, now time.Time) (*bucket, time.Duration) {
	l := b.m[key]
	if l == nil {
		return nil, 0
	}
	l.refill(now, b.every, b.burst)
	switch {
	case l.tokens >= float64(b.burst):
		delete(b.m, key)
		return nil, 0
	case l.tokens < 1:
		return nil, time.Duration((1 - l.tokens) * float64(b.every))
	}
	l.tokens--
	return l, 0
}

// giveBack returns a reserved token (l may be nil, or evicted meanwhile).
func (b *buckets) giveBack(l *bucket) {
	if l != nil {
		l.tokens = min(float64(b.burst), l.tokens+1)
	}
}

// take counts a failure of key without a reservation. Failures that raced
// past an empty bucket drive it below zero, up to one more burst.
func (b *buckets) take(key string, now time.Time, max int) {
	l := b.m[key]
	if l == nil {
		if len(b.m) >= max {
			b.evict(now, max)
		}
		l = &bucket{tokens: float64(b.burst), last: now}
		b.m[key] = l
	}
	l.refill(now, b.every, b.burst)
	l.tokens = math.Max(l.tokens-1, -float64(b.burst))
}

// evict drops refilled buckets, then arbitrary ones down to 3/4 of max.
func (b *buckets) evict(now time.Time, max int) {
	for k, l := range b.m {
		if l.refill(now, b.every, b.burst); l.tokens >= float64(b.burst) {
			delete(b.m, k)
		}
	}
	for k := range b.m {
		if len(b.m) < max*3/4 {
			break
		}
		delete(b.m, k)
	}
}

// loginThrottle is the middleware of the authenticated APIs.
func (s *Server) loginThrottle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every method: an OPTIONS with a password is a guess too.
		if r.Header.Get("Authorization") == "" {
			next.ServeHTTP(w, r)
			return
		}
		// The engine's parser, so that the user counted is the user
		// authenticated.
		user, pass, basic := engine.ParseBasic(r.Header.Get("Authorization"))
		if !basic || !looksLikeCredentialSID(user) {
			user = ""
		}
		addr := s.clientAddr(r)
		s.warnUntrustedForward(r)
		tk, d := s.throttle.admit(addr, user, time.Now())
		if d > 0 {
			s.throttle.refused.Add(1)
			secs := int(math.Ceil(d.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			twiliohttp.WriteJSON(w, http.StatusTooManyRequests, twiliohttp.BodyFor(r, chorus.Errorf(chorus.ErrTooManyRequests,
				"Too many failed authentication attempts: retry in %s", plural(secs, "second"))))
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		failed := false
		defer func() {
			if !failed {
				s.throttle.settle(tk) // also when the handler panics
			}
		}()
		next.ServeHTTP(sw, r)
		if sw.status == http.StatusUnauthorized {
			failed = true
			s.loginFailed(r, tk, addr, user)
			return
		}
		if user != "" && sw.status >= 200 && sw.status < 300 && !s.throttle.knownGood(addr, user, time.Now()) {
			// Not every 2xx proves the credentials (a future route might
			// answer before authenticating): check them once an hour.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
			_, err := s.eng.Authenticate(ctx, user, pass)
			cancel()
			if err == nil {
				s.throttle.succeeded(addr, user, time.Now())
			}
		}
	})
}

// warnUntrustedForward warns, once, that a peer --trusted-proxies does not
// name sent X-Forwarded-For: behind a proxy that is not trusted, the
// throttle counts every client as the proxy.
func (s *Server) warnUntrustedForward(r *http.Request) {
	if r.Header.Get("X-Forwarded-For") == "" || s.warnedForward.Load() || s.trustedProxy(hostOf(r.RemoteAddr)) {
		return
	}
	if s.warnedForward.CompareAndSwap(false, true) {
		s.log.Warn("a client that --trusted-proxies does not name sent X-Forwarded-For: the login throttle counts it, "+
			"not the address it forwards for; behind a reverse proxy, set --trusted-proxies to the proxy's address",
			"client", addrKey(r.RemoteAddr))
	}
}

// loginFailed counts and logs a failed login. The password is never
// logged; the user only when it is an account or key SID.
func (s *Server) loginFailed(r *http.Request, tk ticket, addr, user string) {
	account := ""
	if user != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
		account = s.accountOf(ctx, user)
		cancel()
	}
	s.throttle.fail(tk, addr, user, account, time.Now())
	if s.throttle.logAllowed(time.Now()) {
		s.log.Warn("authentication failed", "client", addr, "user", user, "method", r.Method, "path", r.URL.Path,
			"failures_total", s.throttle.failures.Load())
	}
}

// accountOf is the account of an existing account or API key SID, else "".
func (s *Server) accountOf(ctx context.Context, user string) string {
	switch {
	case chorus.IsSID(chorus.PrefixAccount, user):
		if a, err := s.eng.Account(ctx, user); err == nil {
			return a.SID
		}
	case chorus.IsSID(chorus.PrefixAPIKey, user):
		if k, err := s.eng.APIKey(ctx, user); err == nil {
			return k.AccountSID
		}
	}
	return ""
}

func looksLikeCredentialSID(user string) bool {
	return chorus.IsSID(chorus.PrefixAccount, user) || chorus.IsSID(chorus.PrefixAPIKey, user)
}

// statusWriter records the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// plural writes n and unit, with an s unless n is 1: "1 second", "5 seconds".
func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}
