package nats

import (
	"errors"
	"fmt"

	natsgo "github.com/nats-io/nats.go"
)

// Auth is how a Bus authenticates to NATS and secures the connection. The
// zero value adds nothing; user and password, or a token, can also come
// from the URL (nats://user:pass@host, nats://token@host).
type Auth struct {
	User, Password string // user/password authentication
	Token          string // token authentication
	NKeySeedFile   string // file holding an NKey seed (SU…)
	CredsFile      string // decentralised JWT auth: a .creds file (JWT + seed)

	// TLS: a tls:// URL, or any of these, makes the connection TLS.
	CAFile   string // PEM CA bundle that signed the server certificate
	CertFile string // client certificate (mutual TLS), with KeyFile
	KeyFile  string
}

// WithAuth sets the credentials and TLS settings of the connection.
func WithAuth(a Auth) Option { return func(o *options) { o.auth = a } }

// options turns a into nats.go options, failing on contradictions and
// unreadable files (a missing creds file or a bad seed is a configuration
// error, not an unreachable server).
func (a Auth) options() ([]natsgo.Option, error) {
	var opts []natsgo.Option
	n := 0
	if a.User != "" || a.Password != "" {
		if a.User == "" || a.Password == "" {
			return nil, errors.New("nats: auth: user and password go together")
		}
		opts = append(opts, natsgo.UserInfo(a.User, a.Password))
		n++
	}
	if a.Token != "" {
		opts = append(opts, natsgo.Token(a.Token))
		n++
	}
	if a.NKeySeedFile != "" {
		o, err := natsgo.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats: auth: NKey seed: %w", err)
		}
		opts = append(opts, o)
		n++
	}
	if a.CredsFile != "" {
		opts = append(opts, natsgo.UserCredentials(a.CredsFile))
		n++
	}
	if n > 1 {
		return nil, errors.New("nats: auth: set one of user/password, token, NKey seed or creds file")
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return nil, errors.New("nats: auth: TLS client certificate and key go together")
	}
	if a.CAFile != "" {
		opts = append(opts, natsgo.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, natsgo.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}
