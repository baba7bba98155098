package main

import (
	"context"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// Environment variables of serve's transport and cluster security.
const (
	envTLSCert       = "CHORUS_TLS_CERT"
	envTLSKey        = "CHORUS_TLS_KEY"
	envMaxConns      = "CHORUS_MAX_CONNS"
	envMaxConnsPerIP = "CHORUS_MAX_CONNS_PER_IP"
	envTrusted       = "CHORUS_TRUSTED_PROXIES"
	envMetricsPublic = "CHORUS_METRICS_PUBLIC"
	envBusCreds      = "CHORUS_BUS_CREDS"
	envBusNKey       = "CHORUS_BUS_NKEY"
	envBusTLSCA      = "CHORUS_BUS_TLS_CA"
	envBusTLSCert    = "CHORUS_BUS_TLS_CERT"
	envBusTLSKey     = "CHORUS_BUS_TLS_KEY"
	// Secrets come from the environment only (a flag shows in ps).
	envBusUser     = "CHORUS_BUS_USER"
	envBusPassword = "CHORUS_BUS_PASSWORD"
	envBusToken    = "CHORUS_BUS_TOKEN"
	envClusterKey  = "CHORUS_CLUSTER_SECRET"
)

// securityFlags are serve's flags for TLS, connection caps and NATS
// authentication.
type securityFlags struct {
	tlsCert, tlsKey         *string
	maxConns, maxConnsPerIP *string
	trustedProxies          *string
	metricsPublic           *bool
	fs                      *flag.FlagSet
	busCreds, busNKey       *string
	busCA, busCert, busKey  *string
}

func addSecurityFlags(fs *flag.FlagSet) *securityFlags {
	return &securityFlags{
		tlsCert:        fs.String("tls-cert", getenv(envTLSCert), "PEM certificate (chain): serve HTTPS and WSS; SIGHUP reloads it (default: "+envTLSCert+")"),
		tlsKey:         fs.String("tls-key", getenv(envTLSKey), "PEM private key of --tls-cert (default: "+envTLSKey+")"),
		maxConns:       fs.String("max-conns", getenv(envMaxConns), "cap on open connections, 0 for none (default: "+envMaxConns+", else 90% of the open-files limit)"),
		maxConnsPerIP:  fs.String("max-conns-per-ip", getenv(envMaxConnsPerIP), "cap on open connections per client address, 0 for none; not behind a proxy (default: "+envMaxConnsPerIP+", else 0)"),
		trustedProxies: fs.String("trusted-proxies", getenv(envTrusted), "comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For names the client, for the login throttle (default: "+envTrusted+")"),
		metricsPublic:  fs.Bool("metrics-public", false, "serve /metrics to every client, not only unforwarded loopback ones (default: "+envMetricsPublic+")"),
		fs:             fs,
		busCreds:       fs.String("bus-creds", getenv(envBusCreds), "NATS .creds file (JWT + NKey seed) (default: "+envBusCreds+")"),
		busNKey:        fs.String("bus-nkey", getenv(envBusNKey), "file holding a NATS NKey user seed (default: "+envBusNKey+")"),
		busCA:          fs.String("bus-tls-ca", getenv(envBusTLSCA), "PEM CA of the NATS servers' certificates (default: "+envBusTLSCA+")"),
		busCert:        fs.String("bus-tls-cert", getenv(envBusTLSCert), "client certificate for NATS mutual TLS (default: "+envBusTLSCert+")"),
		busKey:         fs.String("bus-tls-key", getenv(envBusTLSKey), "key of --bus-tls-cert (default: "+envBusTLSKey+")"),
	}
}

// apply puts the flags into cfg.
func (f *securityFlags) apply(cfg *server.Config) error {
	if (*f.tlsCert == "") != (*f.tlsKey == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	cfg.Transport.TLSCert, cfg.Transport.TLSKey = *f.tlsCert, *f.tlsKey
	var err error
	if cfg.Transport.MaxConns, err = count(source(f.fs, "max-conns", envMaxConns), *f.maxConns); err != nil {
		return err
	}
	openFiles := openFilesLimit()
	if *f.maxConns == "" {
		cfg.Transport.MaxConns = defaultMaxConns(openFiles)
	}
	cfg.Webhooks.MaxInFlight = webhookMaxInFlight(openFiles, cfg.Transport.MaxConns)
	if cfg.Transport.MaxConnsPerIP, err = count(source(f.fs, "max-conns-per-ip", envMaxConnsPerIP), *f.maxConnsPerIP); err != nil {
		return err
	}
	cfg.MetricsPublic = *f.metricsPublic
	if err := envSwitch(f.fs, "metrics-public", envMetricsPublic, &cfg.MetricsPublic); err != nil {
		return err
	}
	for _, p := range strings.Split(*f.trustedProxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return usagef("invalid %s entry %q: want an address or CIDR", source(f.fs, "trusted-proxies", envTrusted), p)
			}
			pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		cfg.Transport.TrustedProxies = append(cfg.Transport.TrustedProxies, pfx.Masked())
	}
	cfg.BusAuth = natsbus.Auth{
		User: getenv(envBusUser), Password: getenv(envBusPassword), Token: getenv(envBusToken),
		CredsFile: *f.busCreds, NKeySeedFile: *f.busNKey,
		CAFile: *f.busCA, CertFile: *f.busCert, KeyFile: *f.busKey,
	}
	cfg.ClusterSecret = getenv(envClusterKey)
	if cfg.BusURL == "" && (cfg.BusAuth != (natsbus.Auth{}) || cfg.ClusterSecret != "") {
		return usagef("NATS credentials, TLS settings or %s without --bus", envClusterKey)
	}
	if cfg.ClusterSecret != "" && len(cfg.ClusterSecret) < natsbus.MinSecretLen {
		return usagef("%s is shorter than %d characters", envClusterKey, natsbus.MinSecretLen)
	}
	return nil
}

// source names where flag name's value came from, for an error about it:
// the command line, or the environment variable env it defaults to.
func source(fs *flag.FlagSet, name, env string) string {
	if !flagSet(fs, name) && getenv(env) != "" {
		return env
	}
	return "--" + name
}

func count(name, v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, usagef("invalid %s %q: want a count, 0 for no cap", name, v)
	}
	return n, nil
}

// reloadOnHUP reloads the TLS certificate on SIGHUP until ctx is done.
// Without TLS there is nothing to reload, but the signal is taken all the
// same: its default action killed the server at once, without a graceful
// shutdown, when logrotate, a systemd ExecReload or a closed terminal
// sent it.
func reloadOnHUP(ctx context.Context, srv *server.Server, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if !srv.HasTLS() {
					logger.Info("SIGHUP: nothing to reload (no --tls-cert); SIGTERM stops the server")
					continue
				}
				_ = srv.ReloadTLS() // logs the outcome
			}
		}
	}()
}

// webhookMaxInFlight bounds the webhook requests in flight (each holds a
// descriptor) to half of what the connection cap leaves of the limit on
// open files, between 16 and webhook.DefaultMaxInFlight: services whose
// receivers hang must not take the descriptors of the store, the bus and
// the listener. 0 (the default) when the limit or the cap is unknown.
func webhookMaxInFlight(openFiles uint64, maxConns int) int {
	if openFiles == 0 || openFiles > 1<<31 || maxConns <= 0 || uint64(maxConns) >= openFiles {
		return 0
	}
	return int(min(max((openFiles-uint64(maxConns))/2, 16), webhook.DefaultMaxInFlight))
}

// defaultMaxConns is --max-conns when none is given: 90% of the limit on
// open files, so that connections (one client can open them all; each
// costs a descriptor) never take the ones the store, the bus and webhooks
// need. Without it, a client holding every descriptor made the node refuse
// everyone, itself included ("accept4: too many open files"). 0 (no cap)
// when the limit is unknown or too small to leave a margin.
func defaultMaxConns(openFiles uint64) int {
	const margin = 256 // at least: the store's files, its connections, webhooks
	if openFiles < 2*margin || openFiles > 1<<31 {
		return 0
	}
	return int(min(openFiles*9/10, openFiles-margin))
}
