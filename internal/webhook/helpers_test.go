package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// env is an engine with a dispatcher on a SQLite file.
type env struct {
	st    chorus.Store
	eng   *engine.Engine
	d     *webhook.Dispatcher
	creds engine.Credentials
}

// newEnv starts a dispatcher that may reach loopback receivers, with cfg's
// timings.
func newEnv(t testing.TB, cfg webhook.Config) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return newEnvOn(t, cfg, st)
}

// newEnvOn is newEnv on st, which it closes when the test ends.
func newEnvOn(t testing.TB, cfg webhook.Config, st chorus.Store) *env {
	t.Helper()
	e, start := stoppedEnvOn(t, cfg, st)
	start()
	return e
}

// newStoppedEnv is newEnv with a dispatcher that does not run until start
// is called (the server is down while webhooks queue up).
func newStoppedEnv(t testing.TB, cfg webhook.Config) (e *env, start func()) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return stoppedEnvOn(t, cfg, st)
}

// stoppedEnvOn builds the env on st (closed when the test ends, after the
// dispatcher) and returns what starts its dispatcher.
func stoppedEnvOn(t testing.TB, cfg webhook.Config, st chorus.Store) (*env, func()) {
	t.Helper()
	ctx := context.Background()
	t.Cleanup(func() { st.Close() })
	cfg.Store, cfg.Policy.AllowPrivate = st, true
	d := webhook.New(cfg)
	eng := engine.New(engine.Config{Store: st, Bus: mem.New(), Observe: d.Observe, Outbox: d, CheckWebhookURL: cfg.Policy.CheckURL})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	start := func() {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = d.Run(runCtx) }()
		t.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			defer ccancel()
			_ = d.Close(cctx)
			cancel()
			<-done
		})
	}
	return &env{st: st, eng: eng, d: d, creds: creds}, start
}

// service creates a service with a webhook to hook.
func (e *env) service(t testing.TB, hook string) *chorus.Service {
	t.Helper()
	on := true
	svc, err := e.eng.CreateService(context.Background(), e.creds.AccountSID, engine.ServiceParams{WebhookURL: &hook, WebhooksFromRestEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// pending is the number of webhooks in the outbox.
func (e *env) pending(t testing.TB) int {
	t.Helper()
	var n int
	err := e.st.View(context.Background(), func(tx chorus.ReadTx) error {
		bs, err := tx.OutboxBacklog(context.Background())
		for _, b := range bs {
			n += b.Pending
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// hit is one request a receiver got.
type hit struct {
	at     time.Time
	form   url.Values
	valid  bool   // X-Twilio-Signature checks out with twilio-go
	status int    // what the receiver answered
	token  string // I-Twilio-Idempotency-Token
	// basic is the request's HTTP Basic authentication, if any.
	basic struct {
		user, password string
		ok             bool
	}
}

// receiver is an HTTP receiver on a free loopback port that checks
// signatures with twilio-go's RequestValidator.
type receiver struct {
	*httptest.Server
	token  string
	path   string
	hits   chan hit
	answer func(r *http.Request, n int) int // status to answer the n-th request (1-based)
	mu     sync.Mutex
	n      int
	// userinfo, under mu, is the user:password@ of URL (setUserinfo).
	userinfo string
}

func newReceiver(t testing.TB, authToken string, answer func(r *http.Request, n int) int) *receiver {
	rc := &receiver{token: authToken, path: "/hook?tenant=a", hits: make(chan hit, 10_000), answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		flat := map[string]string{}
		for k, v := range r.PostForm {
			flat[k] = v[0]
		}
		v := client.NewRequestValidator(rc.token)
		ok := v.Validate(rc.URL(), flat, r.Header.Get("X-Twilio-Signature"))
		rc.mu.Lock()
		rc.n++
		n := rc.n
		rc.mu.Unlock()
		status := http.StatusOK
		if rc.answer != nil {
			status = rc.answer(r, n)
		}
		h := hit{at: time.Now(), form: r.PostForm, valid: ok, status: status, token: r.Header.Get("I-Twilio-Idempotency-Token")}
		h.basic.user, h.basic.password, h.basic.ok = r.BasicAuth()
		rc.hits <- h
		if status >= 300 && status < 400 {
			w.Header().Set("Location", rc.Server.URL+"/elsewhere")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// URL is the webhook URL of the receiver, the one its signatures are
// checked against.
func (rc *receiver) URL() string {
	rc.mu.Lock()
	userinfo := rc.userinfo
	rc.mu.Unlock()
	if userinfo == "" {
		return rc.Server.URL + rc.path
	}
	return strings.Replace(rc.Server.URL, "http://", "http://"+userinfo+"@", 1) + rc.path
}

// setUserinfo puts user:password@ (as written, percent-encoding and all)
// into URL.
func (rc *receiver) setUserinfo(userinfo string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.userinfo = userinfo
}

// next waits for the next request.
func (rc *receiver) next(t testing.TB, within time.Duration) hit {
	t.Helper()
	select {
	case h := <-rc.hits:
		if !h.valid {
			t.Errorf("twilio-go rejects the signature of %v", h.form)
		}
		return h
	case <-time.After(within):
		t.Fatalf("no webhook within %v", within)
		return hit{}
	}
}

// none fails if a request arrives within d.
func (rc *receiver) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case h := <-rc.hits:
		t.Fatalf("unexpected webhook %v", h.form)
	case <-time.After(d):
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
