package server

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/chorus-sync/chorus"
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
// only a distributed guesser reaches it. Its lock-out risk: while it is
// empty, a client whose address authenticated successfully as that user in
// the last KnownGoodTTL is still let in (it is only subject to its own
// address's bucket); other addresses wait. So a flood against an account
// from many addresses does not lock out the servers already using it.
//
// Every table is bounded (throttleMaxEntries); when one is full, buckets
// that have refilled are dropped first, then arbitrary ones.
const (
	AddrBurst          = 50
	AddrEvery          = 2 * time.Second
	AccountBurst       = 100
	AccountEvery       = time.Second
	KnownGoodTTL       = 24 * time.Hour
	throttleMaxEntries = 1 << 14
)

// throttle is the table of login buckets; safe for concurrent use.
type throttle struct {
	mu       sync.Mutex
	addrs    buckets
	accounts buckets
	aliases  map[string]string    // API key SID → its account SID, learnt from failures
	good     map[string]time.Time // user + " " + address → last successful login
	max      int

	failures, refused atomic.Uint64
	logLimit          *rate.Limiter // log lines about failed logins
}

func newThrottle() *throttle {
	return &throttle{
		addrs:    buckets{every: AddrEvery, burst: AddrBurst, m: map[string]*rate.Limiter{}},
		accounts: buckets{every: AccountEvery, burst: AccountBurst, m: map[string]*rate.Limiter{}},
		aliases:  map[string]string{},
		good:     map[string]time.Time{},
		max:      throttleMaxEntries,
		logLimit: rate.NewLimiter(rate.Every(100*time.Millisecond), 20),
	}
}

// wait is how long a request from addr with Basic user must wait; 0 lets
// it through.
func (t *throttle) wait(addr, user string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.addrs.wait(addr, now); d > 0 {
		return d
	}
	if user == "" {
		return 0
	}
	acct := user
	if a, ok := t.aliases[user]; ok {
		acct = a
	}
	d := t.accounts.wait(acct, now)
	if d > 0 {
		if at, ok := t.good[user+" "+addr]; ok && now.Sub(at) < KnownGoodTTL {
			return 0
		}
	}
	return d
}

// fail counts a failed login from addr; account is "" when the user names
// no account or key.
func (t *throttle) fail(addr, user, account string, now time.Time) {
	t.failures.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addrs.take(addr, now, t.max)
	if account == "" {
		return
	}
	if user != account {
		if len(t.aliases) >= t.max {
			clear(t.aliases)
		}
		t.aliases[user] = account
	}
	t.accounts.take(account, now, t.max)
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

// buckets is a bounded map of token buckets; the caller holds the lock.
type buckets struct {
	every time.Duration
	burst int
	m     map[string]*rate.Limiter
}

func (b *buckets) wait(key string, now time.Time) time.Duration {
	l := b.m[key]
	if l == nil {
		return 0
	}
	tok := l.TokensAt(now)
	if tok >= 1 {
		return 0
	}
	return time.Duration((1 - tok) * float64(b.every))
}

func (b *buckets) take(key string, now time.Time, max int) {
	l := b.m[key]
	if l == nil {
		if len(b.m) >= max {
			b.evict(now, max)
		}
		l = rate.NewLimiter(rate.Every(b.every), b.burst)
		b.m[key] = l
	}
	l.AllowN(now, 1)
}

// evict drops refilled buckets, then arbitrary ones down to 3/4 of max.
func (b *buckets) evict(now time.Time, max int) {
	for k, l := range b.m {
		if l.TokensAt(now) >= float64(b.burst) {
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
		if r.Header.Get("Authorization") == "" || r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		user, pass, basic := r.BasicAuth()
		if !basic || !looksLikeCredentialSID(user) {
			user = ""
		}
		addr := s.clientAddr(r)
		if d := s.throttle.wait(addr, user, time.Now()); d > 0 {
			s.throttle.refused.Add(1)
			secs := int(math.Ceil(d.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			twiliohttp.WriteJSON(w, http.StatusTooManyRequests, twiliohttp.Body(chorus.Errorf(chorus.ErrTooManyRequests,
				"Too many failed authentication attempts: retry in %d seconds", secs)))
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		switch {
		case sw.status == http.StatusUnauthorized:
			s.loginFailed(r, addr, user)
		case user != "" && sw.status >= 200 && sw.status < 300 && !s.throttle.knownGood(addr, user, time.Now()):
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

// loginFailed counts and logs a failed login. The password is never
// logged; the user only when it is an account or key SID.
func (s *Server) loginFailed(r *http.Request, addr, user string) {
	account := ""
	if user != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
		account = s.accountOf(ctx, user)
		cancel()
	}
	s.throttle.fail(addr, user, account, time.Now())
	if s.throttle.logLimit.Allow() {
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
