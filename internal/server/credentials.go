package server

import (
	"context"
	"fmt"

	"github.com/chorus-sync/chorus/internal/accountapi"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/gateway"
)

// sessionRevoker is the gateway, which closes, on every node, the live
// sessions whose tokens a revoked key signed (Gateway.RevokeKeys); nil
// before the gateway exists.
func (s *Server) sessionRevoker() accountapi.SessionRevoker {
	if s.gw == nil {
		return nil
	}
	return s.gw
}

// The gateway closes the live sessions of revoked keys on every node.
var _ accountapi.SessionRevoker = (*gateway.Gateway)(nil)

// revokeOthers makes the operator's credentials the only valid ones (see
// engine.RevokeOthers) and logs what it revoked, by SID.
func (s *Server) revokeOthers(ctx context.Context, creds engine.Credentials) error {
	r, err := s.eng.RevokeOthers(ctx, creds)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if len(r.Accounts) == 0 && len(r.APIKeys) == 0 {
		return nil
	}
	keys := map[string][]string{}
	var keySIDs []string
	for _, k := range r.APIKeys {
		keys[k.AccountSID] = append(keys[k.AccountSID], k.SID)
		keySIDs = append(keySIDs, k.SID)
	}
	s.log.Warn("revoked credentials that are not the configured TWILIO_* ones",
		"account_sids", r.Accounts, "api_key_sids", keySIDs)
	if rev := s.sessionRevoker(); rev != nil {
		for acct, sids := range keys {
			if err := rev.RevokeKeys(ctx, acct, sids...); err != nil {
				s.log.Error("close the sessions of revoked keys", "account_sid", acct, logErr, err)
			}
		}
	}
	return nil
}
