package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/chorus-sync/chorus/internal/server"
)

// envDevTokens switches the quickstart's /token endpoint like --dev-tokens,
// envDevTokensPublic like --dev-tokens-public.
const (
	envDevTokens       = "CHORUS_DEV_TOKENS"
	envDevTokensPublic = "CHORUS_DEV_TOKENS_PUBLIC"
)

// defaultWSMaxUnauthPerIP is --ws-max-unauth-per-ip's default: clients
// finish init within a round trip or two, so 64 connections of one address
// still waiting for it are a flood, not a busy client.
const defaultWSMaxUnauthPerIP = 64

// defaultWSMaxPerIdentity is --ws-max-per-identity's default: more
// sessions than one person's devices and tabs ever hold, far fewer than a
// node's connections, so that one token (one signed-in user, or anyone
// who took one) cannot lock everyone else out.
const defaultWSMaxPerIdentity = 1000

// defaultWSMaxQueriesPerIdentity is --ws-max-queries-per-identity's
// default: no cap. Every item change of a Map re-evaluates each of its
// live queries: a tester's 4,000 queries on one Map, within each
// session's 20, made every write to it cost 1.36 s of matching; 100 such
// queries cost about 34 ms. But any cap per identity also refuses the
// queries of apps that share one identity among many sessions (kiosks, a
// "guest"), which a reviewer showed break at the 101st with a cap of 100:
// the operator who does not trust its end users sets it.
const defaultWSMaxQueriesPerIdentity = 0

// applyDevTokensPublic sets cfg.DevTokensPublic from --dev-tokens-public
// (or its environment variable). It only widens an endpoint switched on
// explicitly, for a host named by --public-url.
func applyDevTokensPublic(fs *flag.FlagSet, cfg *server.Config, on bool) error {
	if err := envSwitch(fs, "dev-tokens-public", envDevTokensPublic, &on); err != nil {
		return err
	}
	if !on {
		return nil
	}
	if cfg.DevTokens != server.DevTokensOn {
		return usagef("--dev-tokens-public needs --dev-tokens")
	}
	cfg.DevTokensPublic = true
	return nil
}

// devTokensFlag is --dev-tokens: a boolean flag ("--dev-tokens",
// "--dev-tokens=false") whose unset state is server.DevTokensAuto.
type devTokensFlag struct{ mode server.DevTokens }

func (f *devTokensFlag) String() string {
	if f == nil {
		return "auto"
	}
	switch f.mode {
	case server.DevTokensOn:
		return "true"
	case server.DevTokensOff:
		return "false"
	}
	return "auto"
}

func (f *devTokensFlag) Set(s string) error {
	if strings.EqualFold(s, "auto") {
		f.mode = server.DevTokensAuto
		return nil
	}
	on, err := parseSwitch(s)
	if err != nil {
		return fmt.Errorf("want true, false or auto, got %q", s)
	}
	f.mode = server.DevTokensOff
	if on {
		f.mode = server.DevTokensOn
	}
	return nil
}

// IsBoolFlag lets "--dev-tokens" alone mean true.
func (f *devTokensFlag) IsBoolFlag() bool { return true }

// parseSwitch reads an on/off setting the way people write one in an
// environment file: true, false, 1, 0, yes, no, on, off, t, f, in any
// letter case.
func parseSwitch(s string) (bool, error) {
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "on", "yes":
		return true, nil
	case "off", "no":
		return false, nil
	}
	return strconv.ParseBool(s)
}

// envSwitch sets *dst from the environment variable env, unless the flag
// named flagName was given on the command line (which wins).
func envSwitch(fs *flag.FlagSet, flagName, env string, dst *bool) error {
	v := getenv(env)
	if v == "" || flagSet(fs, flagName) {
		return nil
	}
	b, err := parseSwitch(v)
	if err != nil {
		return usagef("invalid %s %q: want true or false (or yes, no, on, off, 1, 0)", env, v)
	}
	*dst = b
	return nil
}
