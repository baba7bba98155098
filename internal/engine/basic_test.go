package engine_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// TestParseBasicLikeNetHTTP: the engine parses Basic exactly as
// net/http's Request.BasicAuth, so the login throttle (which keys on the
// user) and authentication agree on every header; "Basic  <b64>" (two
// spaces) authenticates nobody.
func TestParseBasicLikeNetHTTP(t *testing.T) {
	f := newFixture(t)
	b64 := base64.StdEncoding.EncodeToString([]byte(f.creds.AccountSID + ":" + f.creds.AuthToken))
	for _, h := range []string{
		"Basic " + b64, "basic " + b64, "BASIC " + b64, "Basic  " + b64, "Basic\t" + b64, "Basic " + b64 + " ",
		"Basic", "Basic ", "Basic !!", "Basic " + base64.StdEncoding.EncodeToString([]byte("nocolon")), "Bearer x", "",
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", h)
		wu, wp, wok := r.BasicAuth()
		u, p, ok := engine.ParseBasic(h)
		if u != wu || p != wp || ok != wok {
			t.Errorf("ParseBasic(%q) = %q %q %v, net/http %q %q %v", h, u, p, ok, wu, wp, wok)
		}
		_, err := f.eng.AuthenticateHeader(context.Background(), h)
		if (err == nil) != wok {
			t.Errorf("AuthenticateHeader(%q) = %v, net/http parses it: %v", h, err, wok)
		}
		if err != nil && chorus.ErrorCode(err) != chorus.ErrAuthenticate.Code {
			t.Errorf("AuthenticateHeader(%q) = %v, want 20003", h, err)
		}
	}
}
