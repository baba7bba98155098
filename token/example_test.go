package token_test

import (
	"context"
	"fmt"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/token"
)

func ExampleMint() {
	tok, err := token.Mint(token.Params{
		AccountSID: "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		APIKeySID:  "SKbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		APISecret:  "cccccccccccccccccccccccccccccccc",
		Identity:   "alice",
		ServiceSID: "IS00000000000000000000000000000001",
		TTL:        time.Hour,
		Now:        func() time.Time { return time.Unix(1700000000, 0) }, // for a stable output; omit in real use
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// A server verifies it with the key's secret.
	v := token.Verifier{
		Keys: func(ctx context.Context, sid string) (*chorus.APIKey, error) {
			return &chorus.APIKey{SID: sid, AccountSID: "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Secret: "cccccccccccccccccccccccccccccccc"}, nil
		},
		Now:         func() time.Time { return time.Unix(1700000000, 0) },
		RequireSync: true,
	}
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Identity, c.Sync.ServiceSID, c.Expires.UTC().Format(time.RFC3339))
	// Output: alice IS00000000000000000000000000000001 2023-11-14T23:13:20Z
}
