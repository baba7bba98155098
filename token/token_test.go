package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-sync/chorus"
)

// Fixtures shared by the tests: the account, key and secret of vectors 1, 3
// and 4 of the spec, and a second account with its own key.
const (
	testAccount        = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	testKey            = "SKbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	testSecret         = "cccccccccccccccccccccccccccccccc"
	testService        = "IS00000000000000000000000000000001"
	otherAccount       = "AC0123456789abcdef0123456789abcdef"
	otherKey           = "SK0123456789abcdef0123456789abcdef"
	otherSecret        = "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3t00"
	brokenKey          = "SKeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
	vectorTime   int64 = 1700000000
)

// The test vectors of access-token.md §5.
const (
	vector1 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJqdGkiOiJTS2JiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiLTE3MDAwMDAwMDAiLCJncmFudHMiOnsiaWRlbnRpdHkiOiJhbGljZSIsImRhdGFfc3luYyI6eyJzZXJ2aWNlX3NpZCI6IklTMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDEifX0sImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwLCJpc3MiOiJTS2JiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiIiwic3ViIjoiQUNhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYSJ9.p9b4lXYyykb9e0MQLWqyRzqPjN2C2SGBQBUVpc0emVI"
	vector2 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIiwidHdyIjoiaWUxIn0.eyJqdGkiOiJTSzAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmLTE3MDAwMDAwMDAiLCJncmFudHMiOnsiaWRlbnRpdHkiOiJ1c2VyQGV4YW1wbGUuY29tIiwiZGF0YV9zeW5jIjp7InNlcnZpY2Vfc2lkIjoiSVMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiIsImVuZHBvaW50X2lkIjoibXlhcHA6dXNlckBleGFtcGxlLmNvbTpkZXZpY2UtMSJ9fSwibmJmIjoxNjk5OTk5OTkwLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDA4NjQwMCwiaXNzIjoiU0swMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiIsInN1YiI6IkFDMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYifQ.6x0hJLNuSpx0t6IgEXUUCOzeMSD54MDtttm2TmLsSj0"
	vector3 = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJqdGkiOiJTS2JiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiLTE3MDAwMDAwMDAiLCJncmFudHMiOnsiaWRlbnRpdHkiOiJhbGljZSIsImRhdGFfc3luYyI6e30sImNoYXQiOnsic2VydmljZV9zaWQiOiJJUzAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAyIn19LCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwiaXNzIjoiU0tiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYiIsInN1YiI6IkFDYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWEifQ.r-3IZrLIW0XwjqdpV0t1RQEW3hPazguLJxDuLXaWKQI0gRf9_DiawLUbuTTNVD588ElRSAN7wjExjn4u103Zew"
	vector4 = "eyJhbGciOiJIUzI1NiIsImN0eSI6InR3aWxpby1mcGE7dj0xIiwidHlwIjoiSldUIn0.eyJleHAiOjE3MDAwMDM2MDAsImdyYW50cyI6eyJkYXRhX3N5bmMiOnsic2VydmljZV9zaWQiOiJJUzAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAxIn0sImlkZW50aXR5IjoiYWxpY2UifSwiaXNzIjoiU0tiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYiIsImp0aSI6IlNLYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmItMTc5NTg5Nzk0NiIsIm5iZiI6MTcwMDAwMDAwMCwic3ViIjoiQUNhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYSJ9.TJOFbatcR7R9zltwwR57DUPzYIJBMX43v4k3iivG6GU"
)

var errBackend = errors.New("backend down")

// testKeys is a KeyLookup over the fixture keys. brokenKey fails with a
// backend error; unknown keys are chorus.ErrNotFound wrapped like a store
// would.
func testKeys(_ context.Context, sid string) (*chorus.APIKey, error) {
	switch sid {
	case testKey:
		return &chorus.APIKey{SID: testKey, AccountSID: testAccount, Secret: testSecret}, nil
	case otherKey:
		return &chorus.APIKey{SID: otherKey, AccountSID: otherAccount, Secret: otherSecret}, nil
	case brokenKey:
		return nil, errBackend
	}
	return nil, errors.Join(errors.New("sqlite: api key"), chorus.ErrNotFound)
}

func at(sec int64) func() time.Time { return func() time.Time { return time.Unix(sec, 0) } }

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// sign builds a token from arbitrary header and payload values and signs it
// with method (nil: an empty signature, as alg none uses).
func sign(tb testing.TB, header, payload any, method jwt.SigningMethod, secret string) string {
	tb.Helper()
	h, p := b64(mustJSON(tb, header)), b64(mustJSON(tb, payload))
	if method == nil {
		return h + "." + p + "."
	}
	sig, err := method.Sign(h+"."+p, []byte(secret))
	if err != nil {
		tb.Fatal(err)
	}
	return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func goodHeader() map[string]any {
	return map[string]any{"alg": "HS256", "typ": "JWT", "cty": ContentType}
}

// goodPayload is valid at vectorTime for testKey.
func goodPayload() map[string]any {
	return map[string]any{
		"jti":    testKey + "-1700000000",
		"iss":    testKey,
		"sub":    testAccount,
		"iat":    vectorTime,
		"exp":    vectorTime + 3600,
		"grants": map[string]any{"identity": "alice", "data_sync": map[string]any{"service_sid": testService}},
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func grants(kv ...any) map[string]any {
	return with(goodPayload()["grants"].(map[string]any), kv...)
}

// flipSig flips one bit in the middle of the decoded signature.
func flipSig(tb testing.TB, tok string) string {
	tb.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		tb.Fatal(err)
	}
	sig[len(sig)/2] ^= 0x01
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

func code(err error) int { return chorus.ErrorCode(err) }

func TestVerifyRejects(t *testing.T) {
	hs := jwt.SigningMethodHS256
	good := sign(t, goodHeader(), goodPayload(), hs, testSecret)
	parts := strings.Split(good, ".")
	otherPayload := b64(mustJSON(t, with(goodPayload(), "grants", grants("identity", "mallory"))))
	long := strings.Repeat("x", chorus.MaxIdentityLen+1)

	tests := []struct {
		name string
		tok  string
		v    Verifier
		want int
	}{
		{"empty", "", Verifier{}, 20160},
		{"two segments", parts[0] + "." + parts[1], Verifier{}, 20160},
		{"four segments", good + ".x", Verifier{}, 20160},
		{"not a token", "hello world", Verifier{}, 20160},
		{"bad base64 header", "!!!." + parts[1] + "." + parts[2], Verifier{}, 20101},
		{"bad base64 payload", parts[0] + ".%%%." + parts[2], Verifier{}, 20101},
		{"bad JSON header", b64("{not json") + "." + parts[1] + "." + parts[2], Verifier{}, 20101},
		{"bad JSON payload", parts[0] + "." + b64(`{"iss":`) + "." + parts[2], Verifier{}, 20101},
		{"payload not an object", parts[0] + "." + b64(`[1,2]`) + "." + parts[2], Verifier{}, 20101},
		{"bad base64 signature", parts[0] + "." + parts[1] + ".***", Verifier{}, 20107},
		{"alg none", sign(t, with(goodHeader(), "alg", "none"), goodPayload(), nil, ""), Verifier{}, 20102},
		{"alg missing", sign(t, with(goodHeader(), "alg", nil), goodPayload(), nil, ""), Verifier{}, 20102},
		{"alg unknown", sign(t, with(goodHeader(), "alg", "XX999"), goodPayload(), nil, ""), Verifier{}, 20102},
		{"alg RS256", sign(t, with(goodHeader(), "alg", "RS256"), goodPayload(), hs, testSecret), Verifier{}, 20102},
		{"alg HS512", sign(t, with(goodHeader(), "alg", "HS512"), goodPayload(), jwt.SigningMethodHS512, testSecret), Verifier{}, 20102},
		{"alg HS384", sign(t, with(goodHeader(), "alg", "HS384"), goodPayload(), jwt.SigningMethodHS384, testSecret), Verifier{}, 20102},
		{"wrong cty", sign(t, with(goodHeader(), "cty", "twilio-fpa;v=2"), goodPayload(), hs, testSecret), Verifier{}, 20102},
		{"missing cty", sign(t, with(goodHeader(), "cty", nil), goodPayload(), hs, testSecret), Verifier{}, 20102},
		{"missing typ", sign(t, with(goodHeader(), "typ", nil), goodPayload(), hs, testSecret), Verifier{}, 20102},
		{"wrong typ", sign(t, with(goodHeader(), "typ", "JWS"), goodPayload(), hs, testSecret), Verifier{}, 20102},
		{"twr not a string", sign(t, with(goodHeader(), "twr", 1), goodPayload(), hs, testSecret), Verifier{}, 20102},
		{"tampered payload", parts[0] + "." + otherPayload + "." + parts[2], Verifier{}, 20107},
		{"tampered signature", flipSig(t, good), Verifier{}, 20107},
		{"wrong secret", sign(t, goodHeader(), goodPayload(), hs, otherSecret), Verifier{}, 20107},
		{"signed by auth token", sign(t, goodHeader(), goodPayload(), hs, "authtokenauthtokenauthtoken00000"), Verifier{}, 20107},
		{"unknown iss", sign(t, goodHeader(), with(goodPayload(), "iss", "SKffffffffffffffffffffffffffffffff"), hs, testSecret), Verifier{}, 20103},
		{"iss not a SID", sign(t, goodHeader(), with(goodPayload(), "iss", "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), hs, testSecret), Verifier{}, 20103},
		{"missing iss", sign(t, goodHeader(), with(goodPayload(), "iss", nil), hs, testSecret), Verifier{}, 20103},
		{"missing sub", sign(t, goodHeader(), with(goodPayload(), "sub", nil), hs, testSecret), Verifier{}, 20103},
		{"iss of another account", sign(t, goodHeader(), with(goodPayload(), "iss", otherKey), hs, otherSecret), Verifier{}, 20103},
		{"expired", sign(t, goodHeader(), with(goodPayload(), "iat", vectorTime-7200, "exp", vectorTime-61), hs, testSecret), Verifier{}, 20104},
		{"expired without skew", sign(t, goodHeader(), with(goodPayload(), "iat", vectorTime-7200, "exp", vectorTime-1), hs, testSecret), Verifier{Skew: -1}, 20104},
		// No skew on exp: a session opened with it would be closed (410) at once.
		{"expired a second ago", sign(t, goodHeader(), with(goodPayload(), "iat", vectorTime-7200, "exp", vectorTime-1), hs, testSecret), Verifier{}, 20104},
		{"expiring now", sign(t, goodHeader(), with(goodPayload(), "iat", vectorTime-7200, "exp", vectorTime), hs, testSecret), Verifier{}, 20104},
		{"missing exp", sign(t, goodHeader(), with(goodPayload(), "exp", nil), hs, testSecret), Verifier{}, 20104},
		{"exp not a number", sign(t, goodHeader(), with(goodPayload(), "exp", "soon"), hs, testSecret), Verifier{}, 20104},
		{"nbf future", sign(t, goodHeader(), with(goodPayload(), "nbf", vectorTime+61), hs, testSecret), Verifier{}, 20105},
		{"nbf not a number", sign(t, goodHeader(), with(goodPayload(), "nbf", true), hs, testSecret), Verifier{}, 20105},
		{"iat not a number", sign(t, goodHeader(), with(goodPayload(), "iat", "x"), hs, testSecret), Verifier{}, 20101},
		{"jti not a string", sign(t, goodHeader(), with(goodPayload(), "jti", 7), hs, testSecret), Verifier{}, 20101},
		{"lifetime > 24h from iat", sign(t, goodHeader(), with(goodPayload(), "iat", vectorTime-3600, "exp", vectorTime+86400-3599), hs, testSecret), Verifier{}, 20157},
		{"lifetime > 24h from nbf", sign(t, goodHeader(), with(goodPayload(), "iat", nil, "nbf", vectorTime-3600, "exp", vectorTime+86400-3599), hs, testSecret), Verifier{}, 20157},
		{"exp > 24h from now", sign(t, goodHeader(), with(goodPayload(), "iat", nil, "exp", vectorTime+86400+61), hs, testSecret), Verifier{}, 20157},
		{"grants missing", sign(t, goodHeader(), with(goodPayload(), "grants", nil), hs, testSecret), Verifier{}, 20106},
		{"grants not an object", sign(t, goodHeader(), with(goodPayload(), "grants", "all"), hs, testSecret), Verifier{}, 20106},
		{"missing identity", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", nil)), hs, testSecret), Verifier{}, 20106},
		{"empty identity", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", "")), hs, testSecret), Verifier{}, 20106},
		{"non-string identity", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", 42)), hs, testSecret), Verifier{}, 20106},
		{"identity > 256 chars", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", long)), hs, testSecret), Verifier{}, 20106},
		{"identity with NUL", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", "a\x00b")), hs, testSecret), Verifier{}, 20106},
		// REST's identity in created_by and webhooks: a token for it
		// would make an SDK change pass for a backend's.
		{"identity system", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", "system")), hs, testSecret), Verifier{}, 20106},
		{"identity SYSTEM", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", "SYSTEM")), hs, testSecret), Verifier{}, 20106},
		{"identity system with a trailing space", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", "system ")), hs, testSecret), Verifier{}, 20106},
		{"identity sys<ZWSP>tem", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", "sys\u200btem")), hs, testSecret), Verifier{}, 20106},
		{"identity of spaces", sign(t, goodHeader(), with(goodPayload(), "grants", grants("identity", " \u00a0")), hs, testSecret), Verifier{}, 20106},
		{"malformed service SID", sign(t, goodHeader(), with(goodPayload(), "grants", grants("data_sync", map[string]any{"service_sid": "IS123"})), hs, testSecret), Verifier{}, 20106},
		{"upper-case service SID", sign(t, goodHeader(), with(goodPayload(), "grants", grants("data_sync", map[string]any{"service_sid": "IS" + strings.Repeat("A", 32)})), hs, testSecret), Verifier{}, 20106},
		{"service SID not a string", sign(t, goodHeader(), with(goodPayload(), "grants", grants("data_sync", map[string]any{"service_sid": 1})), hs, testSecret), Verifier{}, 20106},
		{"endpoint_id not a string", sign(t, goodHeader(), with(goodPayload(), "grants", grants("data_sync", map[string]any{"endpoint_id": []int{1}})), hs, testSecret), Verifier{}, 20106},
		{"data_sync not an object", sign(t, goodHeader(), with(goodPayload(), "grants", grants("data_sync", "yes")), hs, testSecret), Verifier{}, 20106},
		{"sync required", sign(t, goodHeader(), with(goodPayload(), "grants", grants("data_sync", nil)), hs, testSecret), Verifier{RequireSync: true}, 20106},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.v
			v.Keys = testKeys
			v.Now = at(vectorTime)
			c, err := v.Verify(context.Background(), tt.tok)
			if err == nil {
				t.Fatalf("Verify(%s) = %+v, want error %d", tt.name, c, tt.want)
			}
			var ce *chorus.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Verify(%s) error = %v (%T), want *chorus.Error", tt.name, err, err)
			}
			if ce.Code != tt.want {
				t.Errorf("Verify(%s) code = %d (%v), want %d", tt.name, ce.Code, err, tt.want)
			}
			if ce.Status != 401 {
				t.Errorf("Verify(%s) status = %d, want 401", tt.name, ce.Status)
			}
			if c != nil {
				t.Errorf("Verify(%s) claims = %+v, want nil on error", tt.name, c)
			}
		})
	}
}

func TestVerifyAccepts(t *testing.T) {
	hs := jwt.SigningMethodHS256
	tests := []struct {
		name    string
		payload map[string]any
		check   func(t *testing.T, c *Claims)
	}{
		{"baseline", goodPayload(), func(t *testing.T, c *Claims) {
			if c.Identity != "alice" || c.Sync == nil || c.Sync.ServiceSID != testService {
				t.Errorf("claims = %+v, want alice on %s", c, testService)
			}
		}},
		{"a second left", with(goodPayload(), "exp", vectorTime+1), nil},
		{"nbf within skew", with(goodPayload(), "nbf", vectorTime+59), nil},
		{"exactly 24h", with(goodPayload(), "exp", vectorTime+86400), nil},
		{"fractional dates (python)", with(goodPayload(), "iat", nil, "nbf", 1699999999.734512, "exp", 1700003599.734512), func(t *testing.T, c *Claims) {
			if got, want := c.Expires.Unix(), int64(1700003599); got != want {
				t.Errorf("Expires = %d, want %d", got, want)
			}
			if !c.IssuedAt.IsZero() {
				t.Errorf("IssuedAt = %v, want zero", c.IssuedAt)
			}
		}},
		{"default service alias", with(goodPayload(), "grants", grants("data_sync", map[string]any{"service_sid": "default"})), func(t *testing.T, c *Claims) {
			if c.Sync == nil || c.Sync.ServiceSID != "default" {
				t.Errorf("Sync = %+v, want default", c.Sync)
			}
		}},
		{"no sync grant", with(goodPayload(), "grants", grants("data_sync", nil)), func(t *testing.T, c *Claims) {
			if c.Sync != nil {
				t.Errorf("Sync = %+v, want nil", c.Sync)
			}
		}},
		{"unknown grants tolerated", with(goodPayload(), "grants", grants("video", map[string]any{"room": "r"}, "voice", map[string]any{"incoming": map[string]any{"allow": true}})), nil},
		{"identity 256 chars", with(goodPayload(), "grants", grants("identity", strings.Repeat("é", 256))), func(t *testing.T, c *Claims) {
			if len([]rune(c.Identity)) != 256 {
				t.Errorf("Identity has %d runes, want 256", len([]rune(c.Identity)))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Verifier{Keys: testKeys, Now: at(vectorTime), RequireSync: tt.name != "no sync grant"}
			c, err := v.Verify(context.Background(), sign(t, goodHeader(), tt.payload, hs, testSecret))
			if err != nil {
				t.Fatalf("Verify(%s) = %v, want success", tt.name, err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestVerifyKeyLookupError(t *testing.T) {
	v := Verifier{Keys: testKeys, Now: at(vectorTime)}
	tok := sign(t, goodHeader(), with(goodPayload(), "iss", brokenKey), jwt.SigningMethodHS256, testSecret)
	_, err := v.Verify(context.Background(), tok)
	if !errors.Is(err, errBackend) {
		t.Fatalf("Verify with failing lookup = %v, want wrapped %v", err, errBackend)
	}
	if c := code(err); c != 0 {
		t.Errorf("Verify with failing lookup code = %d, want 0 (not a token error)", c)
	}
}

func TestVerifyVectors(t *testing.T) {
	v1 := &Claims{
		ID: testKey + "-1700000000", Issuer: testKey, Subject: testAccount,
		IssuedAt: time.Unix(1700000000, 0), Expires: time.Unix(1700003600, 0),
		Identity: "alice", Sync: &SyncGrant{ServiceSID: testService}, Algorithm: "HS256",
	}
	v2 := &Claims{
		ID: otherKey + "-1700000000", Issuer: otherKey, Subject: otherAccount,
		IssuedAt: time.Unix(1700000000, 0), NotBefore: time.Unix(1699999990, 0), Expires: time.Unix(1700086400, 0),
		Identity: "user@example.com", Algorithm: "HS256", Region: "ie1",
		Sync: &SyncGrant{ServiceSID: "IS0123456789abcdef0123456789abcdef", EndpointID: "myapp:user@example.com:device-1"},
	}
	v3 := &Claims{
		ID: testKey + "-1700000000", Issuer: testKey, Subject: testAccount,
		IssuedAt: time.Unix(1700000000, 0), Expires: time.Unix(1700003600, 0),
		Identity: "alice", Sync: &SyncGrant{}, Algorithm: "HS512",
	}
	v4 := &Claims{
		ID: testKey + "-1795897946", Issuer: testKey, Subject: testAccount,
		NotBefore: time.Unix(1700000000, 0), Expires: time.Unix(1700003600, 0),
		Identity: "alice", Sync: &SyncGrant{ServiceSID: testService}, Algorithm: "HS256",
	}
	tests := []struct {
		name  string
		tok   string
		allow bool
		want  *Claims
		code  int
	}{
		{"vector 1", vector1, false, v1, 0},
		{"vector 2", vector2, false, v2, 0},
		{"vector 3 default", vector3, false, nil, 20102},
		{"vector 3 allowed", vector3, true, v3, 0},
		{"vector 4", vector4, false, v4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Verifier{Keys: testKeys, Now: at(vectorTime + 10), AllowHS384HS512: tt.allow, RequireSync: true}
			got, err := v.Verify(context.Background(), tt.tok)
			if tt.want == nil {
				if code(err) != tt.code {
					t.Fatalf("Verify(%s) = %v, want code %d", tt.name, err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify(%s) = %v, want success", tt.name, err)
			}
			assertClaims(t, got, tt.want)

			// Flipping one signature bit, or a wrong secret, must fail.
			if _, err := v.Verify(context.Background(), flipSig(t, tt.tok)); code(err) != 20107 {
				t.Errorf("Verify(%s with flipped signature) = %v, want 20107", tt.name, err)
			}
			wrong := v
			wrong.Keys = func(ctx context.Context, sid string) (*chorus.APIKey, error) {
				k, err := testKeys(ctx, sid)
				if err != nil {
					return nil, err
				}
				k.Secret += "x"
				return k, nil
			}
			if _, err := wrong.Verify(context.Background(), tt.tok); code(err) != 20107 {
				t.Errorf("Verify(%s with another secret) = %v, want 20107", tt.name, err)
			}
			// In real time the vectors are long expired.
			real := v
			real.Now = nil
			if _, err := real.Verify(context.Background(), tt.tok); code(err) != 20104 {
				t.Errorf("Verify(%s now) = %v, want 20104", tt.name, err)
			}
		})
	}
}

func assertClaims(tb testing.TB, got, want *Claims) {
	tb.Helper()
	g, w := *got, *want
	if (g.Sync == nil) != (w.Sync == nil) || (g.Sync != nil && *g.Sync != *w.Sync) {
		tb.Errorf("Sync = %+v, want %+v", g.Sync, w.Sync)
	}
	g.Sync, w.Sync = nil, nil
	for _, p := range []*time.Time{&g.IssuedAt, &g.NotBefore, &g.Expires, &w.IssuedAt, &w.NotBefore, &w.Expires} {
		if !p.IsZero() {
			*p = p.UTC()
		}
	}
	if g != w {
		tb.Errorf("claims = %+v, want %+v", g, w)
	}
}
