package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	twjwt "github.com/twilio/twilio-go/client/jwt"
)

func vector1Params() Params {
	return Params{
		AccountSID: testAccount, APIKeySID: testKey, APISecret: testSecret,
		Identity: "alice", ServiceSID: testService, Now: at(vectorTime),
	}
}

func segment(tb testing.TB, tok string, i int) map[string]any {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestMintVector1(t *testing.T) {
	tok, err := Mint(vector1Params())
	if err != nil {
		t.Fatal(err)
	}
	// Same header and payload as twilio-node's vector 1, as JSON values.
	for i, name := range []string{"header", "payload"} {
		if got, want := segment(t, tok, i), segment(t, vector1, i); !reflect.DeepEqual(got, want) {
			t.Errorf("Mint(vector 1) %s = %v, want %v", name, got, want)
		}
	}
	// The payload follows twilio-node's key order, so it is byte-identical.
	if got, want := strings.Split(tok, ".")[1], strings.Split(vector1, ".")[1]; got != want {
		t.Errorf("Mint(vector 1) payload segment = %s, want %s", got, want)
	}
	v := Verifier{Keys: testKeys, Now: at(vectorTime), RequireSync: true}
	got, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify(Mint(vector 1)) = %v", err)
	}
	want, err := v.Verify(context.Background(), vector1)
	if err != nil {
		t.Fatal(err)
	}
	assertClaims(t, got, want)
}

func TestMintVector2(t *testing.T) {
	tok, err := Mint(Params{
		AccountSID: otherAccount, APIKeySID: otherKey, APISecret: otherSecret,
		Identity: "user@example.com", ServiceSID: "IS0123456789abcdef0123456789abcdef",
		EndpointID: "myapp:user@example.com:device-1", Region: "ie1",
		TTL: 24 * time.Hour, NotBefore: time.Unix(1699999990, 0), Now: at(vectorTime),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"header", "payload"} {
		if got, want := segment(t, tok, i), segment(t, vector2, i); !reflect.DeepEqual(got, want) {
			t.Errorf("Mint(vector 2) %s = %v, want %v", name, got, want)
		}
	}
	if got, want := strings.Split(tok, ".")[1], strings.Split(vector2, ".")[1]; got != want {
		t.Errorf("Mint(vector 2) payload segment = %s, want %s", got, want)
	}
}

func TestMintEmptySyncGrant(t *testing.T) {
	p := vector1Params()
	p.ServiceSID = ""
	tok, err := Mint(p)
	if err != nil {
		t.Fatal(err)
	}
	g := segment(t, tok, 1)["grants"].(map[string]any)
	if ds, ok := g["data_sync"].(map[string]any); !ok || len(ds) != 0 {
		t.Errorf("Mint without service: data_sync = %v, want {}", g["data_sync"])
	}
	if _, ok := segment(t, tok, 1)["nbf"]; ok {
		t.Errorf("Mint without NotBefore has nbf, want none")
	}
}

// TestMintRefusesWhatVerifyRefuses: a token over MaxTokenBytes (a 60,000
// character endpoint ID made one of 80 KB) is refused at mint: Verify
// would refuse it at every use.
func TestMintRefusesWhatVerifyRefuses(t *testing.T) {
	p := vector1Params()
	p.EndpointID = strings.Repeat("e", 60000)
	if tok, err := Mint(p); err == nil {
		t.Errorf("Mint with a 60,000-character endpoint ID = a %d-byte token, want an error", len(tok))
	}
	p.EndpointID = strings.Repeat("e", 40000) // still under the limit once encoded
	tok, err := Mint(p)
	if err != nil {
		t.Fatalf("Mint with a 40,000-character endpoint ID: %v", err)
	}
	if len(tok) > MaxTokenBytes {
		t.Fatalf("minted %d bytes, over MaxTokenBytes", len(tok))
	}
}

func TestMintTTL(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64 // exp - iat
	}{
		{0, 3600},
		{time.Second, 1},
		{90 * time.Minute, 5400},
		{24 * time.Hour, 86400},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			p := vector1Params()
			p.TTL = tt.ttl
			tok, err := Mint(p)
			if err != nil {
				t.Fatal(err)
			}
			c := segment(t, tok, 1)
			if got := int64(c["exp"].(float64) - c["iat"].(float64)); got != tt.want {
				t.Errorf("Mint(TTL %v) exp-iat = %d, want %d", tt.ttl, got, tt.want)
			}
		})
	}
}

func TestMintRejects(t *testing.T) {
	tests := []struct {
		name string
		mod  func(p *Params)
	}{
		{"TTL over 24h", func(p *Params) { p.TTL = 24*time.Hour + time.Second }},
		{"negative TTL", func(p *Params) { p.TTL = -time.Second }},
		{"sub-second TTL", func(p *Params) { p.TTL = time.Millisecond }},
		{"bad account", func(p *Params) { p.AccountSID = "ACxyz" }},
		{"bad key", func(p *Params) { p.APIKeySID = testAccount }},
		{"no secret", func(p *Params) { p.APISecret = "" }},
		{"no identity", func(p *Params) { p.Identity = "" }},
		{"long identity", func(p *Params) { p.Identity = strings.Repeat("a", 257) }},
		{"identity with NUL", func(p *Params) { p.Identity = "a\x00b" }},
		{"identity not UTF-8", func(p *Params) { p.Identity = "a\xffb" }},
		{"bad service", func(p *Params) { p.ServiceSID = "MyService" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := vector1Params()
			tt.mod(&p)
			if tok, err := Mint(p); err == nil {
				t.Errorf("Mint(%s) = %s, want error", tt.name, tok)
			}
		})
	}
}

// TestTwilioGoInterop checks both directions against the official twilio-go
// helper: its tokens verify to the claims ours carry, and ours decode with
// its FromJwt.
func TestTwilioGoInterop(t *testing.T) {
	const region = "ie1"
	v := Verifier{Keys: testKeys, RequireSync: true}

	at := twjwt.CreateAccessToken(twjwt.AccessTokenParams{
		AccountSid: testAccount, SigningKeySid: testKey, Secret: testSecret,
		Identity: "bob", Region: region,
	})
	at.AddGrant(&twjwt.SyncGrant{ServiceSid: testService, EndpointID: "bob:phone"})
	theirs, err := at.ToJwt()
	if err != nil {
		t.Fatal(err)
	}
	ours, err := Mint(Params{
		AccountSID: testAccount, APIKeySID: testKey, APISecret: testSecret,
		Identity: "bob", ServiceSID: testService, EndpointID: "bob:phone", Region: region,
	})
	if err != nil {
		t.Fatal(err)
	}

	ct, err := v.Verify(context.Background(), theirs)
	if err != nil {
		t.Fatalf("Verify(twilio-go token) = %v", err)
	}
	co, err := v.Verify(context.Background(), ours)
	if err != nil {
		t.Fatalf("Verify(Mint token) = %v", err)
	}
	if d := ct.Expires.Sub(co.Expires); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("twilio-go exp %v vs ours %v differ by %v", ct.Expires, co.Expires, d)
	}
	if ct.NotBefore.IsZero() || !ct.IssuedAt.IsZero() {
		t.Errorf("twilio-go token nbf=%v iat=%v, want nbf set and no iat", ct.NotBefore, ct.IssuedAt)
	}
	// Apart from the timestamps (twilio-go sets nbf, not iat), the claims are equal.
	for _, c := range []*Claims{ct, co} {
		c.IssuedAt, c.NotBefore, c.Expires = time.Time{}, time.Time{}, time.Time{}
		c.ID = c.ID[:strings.LastIndexByte(c.ID, '-')]
	}
	assertClaims(t, ct, co)

	dec, err := (&twjwt.AccessToken{}).FromJwt(ours, testSecret)
	if err != nil {
		t.Fatalf("twilio-go FromJwt(Mint token) = %v", err)
	}
	if dec.AccountSid != testAccount || dec.SigningKeySid != testKey || dec.Identity != "bob" || dec.Region != region {
		t.Errorf("FromJwt = account %q key %q identity %q region %v, want %s %s bob %s",
			dec.AccountSid, dec.SigningKeySid, dec.Identity, dec.Region, testAccount, testKey, region)
	}
	if len(dec.Grants) != 1 {
		t.Fatalf("FromJwt grants = %v, want one", dec.Grants)
	}
	sg, ok := dec.Grants[0].(*twjwt.SyncGrant)
	if !ok || sg.ServiceSid != testService || sg.EndpointID != "bob:phone" {
		t.Errorf("FromJwt grant = %#v, want SyncGrant %s bob:phone", dec.Grants[0], testService)
	}
	if _, err := (&twjwt.AccessToken{}).FromJwt(ours, otherSecret); err == nil {
		t.Errorf("twilio-go FromJwt(Mint token, wrong secret) succeeded, want error")
	}
}
