package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// envURL is the base URL `chorus admin keys` talks to.
const envURL = "CHORUS_URL"

// cmdKeys is `chorus admin keys list|create|revoke`: API key management
// through a running server's API v2010 Keys resource, so that a revoked
// key's live sessions are closed too. It signs in with TWILIO_ACCOUNT_SID
// and TWILIO_AUTH_TOKEN (or a main key: TWILIO_API_KEY and
// TWILIO_API_SECRET) from the environment, else with the credentials
// stored in --store's PostgreSQL (CHORUS_STORE_URL) or --data-dir.
func cmdKeys(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("admin keys: expected list, create or revoke")
	}
	sub := args[0]
	fs := newFlags("admin keys " + sub)
	base := fs.String("url", defaultURL(), "the server's base URL (default: CHORUS_URL, else http://127.0.0.1:$PORT or :3000)")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory holding the stored credentials (without TWILIO_*)")
	storeURL := storeFlag(fs, "postgres://… holding the stored credentials, without TWILIO_* (default: CHORUS_STORE_URL, unless --data-dir is named)")
	name := ""
	switch sub {
	case "create":
		fs.StringVar(&name, "name", "", "the key's friendly name")
	case "list", "revoke":
	case "-h", "-help", "--help", "help":
		fs.StringVar(&name, "name", "", "create: the key's friendly name")
		return helpError{fs}
	default:
		return usagef("admin keys: unknown subcommand %q (want list, create or revoke)", sub)
	}
	// revoke's SID may come before or after the flags.
	var sid string
	rest := args[1:]
	if sub == "revoke" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		sid, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpError{fs}
		}
		return usagef("%v", err)
	}
	if sub == "revoke" && sid == "" && fs.NArg() > 0 {
		sid = fs.Arg(0)
		if err := parse(fs, fs.Args()[1:]); err != nil {
			return err
		}
	} else if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if sub == "revoke" {
		if sid == "" {
			return usagef("admin keys revoke: expected an API key SID (SK…)")
		}
		if !chorus.IsSID(chorus.PrefixAPIKey, sid) {
			return usagef("admin keys revoke: %q is not an API key SID (SK followed by 32 hex digits)", sid)
		}
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("invalid --url %q: want http://host:port or https://host", *base)
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		// The auth token goes in every request's Authorization header.
		return usagef("invalid --url %q: http:// only to a loopback address, since the credentials would cross the network in clear text; use https://", *base)
	}
	account, user, pass, err := keysCredentials(func() (engine.Credentials, error) {
		return deploymentCredentials(ctx, fs, *storeURL, *dataDir)
	})
	if err != nil {
		return err
	}
	c := &keysClient{base: strings.TrimRight(*base, "/") + "/2010-04-01/Accounts/" + account, user: user, pass: pass,
		http: &http.Client{Timeout: 30 * time.Second}}
	switch sub {
	case "list":
		return c.list(ctx, stdout)
	case "create":
		var k keyJSON
		if err := c.do(ctx, http.MethodPost, "/Keys.json", url.Values{"FriendlyName": {name}}, &k); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "%s=%s\n%s=%s\n", envAPIKey, k.SID, envAPISecret, k.Secret)
		return err
	case "revoke":
		if err := c.do(ctx, http.MethodDelete, "/Keys/"+sid+".json", nil, nil); err != nil {
			return err
		}
		_, err := fmt.Fprintf(stdout, "revoked %s\n", sid)
		return err
	}
	return nil // not reached: sub was checked above
}

func defaultURL() string {
	if u := getenv(envURL); u != "" {
		return u
	}
	if p := getenv(envPort); p != "" {
		return "http://127.0.0.1:" + p
	}
	return "http://127.0.0.1:3000"
}

// keysCredentials picks the credentials that manage keys.
func keysCredentials(stored func() (engine.Credentials, error)) (account, user, pass string, err error) {
	account = getenv(envAccountSID)
	switch {
	case account != "" && getenv(envAuthToken) != "":
		return account, account, getenv(envAuthToken), nil
	case account != "" && getenv(envAPIKey) != "" && getenv(envAPISecret) != "":
		return account, getenv(envAPIKey), getenv(envAPISecret), nil
	case account != "" || getenv(envAPIKey) != "":
		return "", "", "", usagef("set %s with %s (or with a main key's %s and %s)", envAccountSID, envAuthToken, envAPIKey, envAPISecret)
	}
	c, err := stored()
	if err != nil && !errors.Is(err, errKeyRevoked) { // keys are managed with the auth token
		return "", "", "", err
	}
	return c.AccountSID, c.AccountSID, c.AuthToken, nil
}

type keyJSON struct {
	SID          string `json:"sid"`
	FriendlyName string `json:"friendly_name"`
	DateCreated  string `json:"date_created"`
	Secret       string `json:"secret"`
}

type keysClient struct {
	base, user, pass string
	http             *http.Client
}

func (c *keysClient) list(ctx context.Context, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SID\tFRIENDLY NAME\tCREATED")
	path := "/Keys.json?PageSize=1000"
	for page := 0; page < 1000; page++ {
		var p struct {
			Keys        []keyJSON `json:"keys"`
			NextPageURI *string   `json:"next_page_uri"`
		}
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("%s&Page=%d", path, page), nil, &p); err != nil {
			return err
		}
		for _, k := range p.Keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.SID, k.FriendlyName, k.DateCreated)
		}
		if p.NextPageURI == nil {
			break
		}
	}
	return tw.Flush()
}

// do sends one request; a Twilio error body becomes the error.
func (c *keysClient) do(ctx context.Context, method, path string, form url.Values, out any) error {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.pass)
	req.Header.Set("Accept", "application/json")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Code != 0 {
			return fmt.Errorf("%s %s: %d %s (HTTP %d)", method, req.URL.Path, e.Code, e.Message, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, req.URL.Path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	return nil
}
