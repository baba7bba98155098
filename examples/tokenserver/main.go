package main

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/token"
)

// config is what the token server needs: the Chorus account's API key and
// the Sync service, and how long tokens live.
type config struct {
	AccountSID, APIKeySID, APISecret, ServiceSID string
	TTL                                          time.Duration
	// Authenticate returns the identity of the app's signed-in user.
	Authenticate func(r *http.Request) (identity string, ok bool)
}

// newHandler serves POST /token: a token for the authenticated user.
func newHandler(cfg config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		identity, ok := cfg.Authenticate(r)
		if !ok {
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		tok, err := token.Mint(token.Params{
			AccountSID: cfg.AccountSID, APIKeySID: cfg.APIKeySID, APISecret: cfg.APISecret,
			Identity: identity, ServiceSID: cfg.ServiceSID, TTL: cfg.TTL,
		})
		if err != nil {
			slog.Error("mint a token", "identity", identity, "err", err)
			http.Error(w, "cannot mint a token", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"identity": identity, "token": tok})
	})
	return mux
}

// check mints a token with cfg, so that a bad SID, secret or TTL stops
// the server at start instead of failing every request.
func (cfg config) check() error {
	_, err := token.Mint(token.Params{
		AccountSID: cfg.AccountSID, APIKeySID: cfg.APIKeySID, APISecret: cfg.APISecret,
		Identity: "tokenserver-check", ServiceSID: cfg.ServiceSID, TTL: cfg.TTL,
	})
	return err
}

// basicUsers authenticates HTTP Basic against "user:password,…". A user
// name is the identity of the user's tokens: one Chorus refuses (system,
// or not a valid identity) is refused here.
func basicUsers(spec string) (func(r *http.Request) (string, bool), error) {
	users := map[string]string{}
	for _, pair := range strings.Split(spec, ",") {
		user, pass, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok || user == "" || pass == "" {
			return nil, errors.New("TOKENSERVER_USERS: want user:password,user:password")
		}
		if chorus.ReservedIdentity(user) || !chorus.ValidIdentity(user) {
			return nil, fmt.Errorf("TOKENSERVER_USERS: %q cannot be an identity (Chorus refuses tokens for it)", user)
		}
		users[user] = pass
	}
	return func(r *http.Request) (string, bool) {
		user, pass, ok := r.BasicAuth()
		want, known := users[user]
		if !ok || !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			return "", false
		}
		return user, true
	}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	ttl := flag.Duration("ttl", time.Hour, "token lifetime")
	flag.Parse()
	auth, err := basicUsers(os.Getenv("TOKENSERVER_USERS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenserver:", err)
		os.Exit(2)
	}
	cfg := config{
		AccountSID: os.Getenv("TWILIO_ACCOUNT_SID"), APIKeySID: os.Getenv("TWILIO_API_KEY"),
		APISecret: os.Getenv("TWILIO_API_SECRET"), ServiceSID: os.Getenv("TWILIO_SYNC_SERVICE_SID"),
		TTL: *ttl, Authenticate: auth,
	}
	if cfg.AccountSID == "" || cfg.APIKeySID == "" || cfg.APISecret == "" || cfg.ServiceSID == "" {
		fmt.Fprintln(os.Stderr, "tokenserver: set TWILIO_ACCOUNT_SID, TWILIO_API_KEY, TWILIO_API_SECRET and TWILIO_SYNC_SERVICE_SID")
		os.Exit(2)
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "tokenserver:", err)
		os.Exit(2)
	}
	slog.Info("token server listening", "addr", *listen)
	srv := &http.Server{Addr: *listen, Handler: newHandler(cfg), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "tokenserver:", err)
		os.Exit(1)
	}
}
