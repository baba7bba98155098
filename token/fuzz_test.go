package token

import (
	"context"
	"errors"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-sync/chorus"
)

func FuzzVerify(f *testing.F) {
	for _, s := range []string{vector1, vector2, vector3, vector4, "", ".", "..", "a.b.c", "e30.e30.", "eyJhbGciOiJub25lIn0.e30."} {
		f.Add(s)
	}
	f.Add(sign(f, goodHeader(), goodPayload(), jwt.SigningMethodHS256, testSecret))
	f.Add(sign(f, goodHeader(), with(goodPayload(), "exp", 1e300, "iat", -1e300), jwt.SigningMethodHS256, testSecret))
	f.Fuzz(func(t *testing.T, raw string) {
		v := Verifier{Keys: testKeys, Now: at(vectorTime), AllowHS384HS512: true}
		c, err := v.Verify(context.Background(), raw)
		if err != nil {
			var ce *chorus.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Verify(%q) error %v (%T) is not a *chorus.Error", raw, err, err)
			}
			if ce.Code < 20101 || ce.Code > 20160 {
				t.Fatalf("Verify(%q) code = %d, want a token code", raw, ce.Code)
			}
			if c != nil {
				t.Fatalf("Verify(%q) returned claims with an error", raw)
			}
			return
		}
		if c.Identity == "" || c.Expires.IsZero() || (c.Issuer != testKey && c.Issuer != otherKey) {
			t.Fatalf("Verify(%q) accepted incomplete claims %+v", raw, c)
		}
	})
}
