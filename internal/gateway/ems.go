package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
)

// The EMS token exchange of twilio-sync 0.5–0.7 (twilio-ems-client 0.2):
// before anything else the SDK POSTs {"fpa_token", "continuation_token"} to
// the EMS /v1/token endpoint, through the websocket when it is up and as
// plain HTTP (XMLHttpRequest) when it is not, and waits for
// {"twilio_rtd_token", "ttl", "status": {"status"}, "identity",
// "account_sid", "instance_sids": {"data_sync"}, "continuation_token"}.
// Chorus verifies the access token and hands it back as the "RTD token":
// its CDS requests then carry the same token (X-Twilio-Token), which the
// session has verified at init anyway.

// emsMaxBody bounds the plain-HTTP exchange's body: a token and a
// continuation token.
const emsMaxBody = 64 << 10

type emsRequest struct {
	FPAToken          string `json:"fpa_token"`
	ContinuationToken string `json:"continuation_token"`
}

type emsStatus struct {
	Status string `json:"status"`
}

type emsReply struct {
	Token             string            `json:"twilio_rtd_token"`
	TTL               int64             `json:"ttl"`
	Status            emsStatus         `json:"status"`
	Identity          string            `json:"identity"`
	AccountSID        string            `json:"account_sid"`
	InstanceSIDs      map[string]string `json:"instance_sids"`
	ContinuationToken string            `json:"continuation_token"`
}

// isEMSToken reports whether segs is the EMS token path, /v1/token.
func isEMSToken(segs []string) bool {
	return len(segs) == 2 && segs[0] == "v1" && segs[1] == "token"
}

// emsToken answers one token exchange; sess is the session it came
// through (nil over plain HTTP). twilio-sync 0.5–0.7 exchange a renewed
// token first and send the socket's update only once the exchange
// succeeded, so through a session the token is verified as the update
// would verify it (authenticate, against the session's key while the
// store is out of reach) and must be of the session's identity and
// service (handleUpdate). An exchange that accepted what the update then
// refused had the SDK re-register its notifications on a socket being
// closed, which crashed the process with an unhandled rejection; refused
// here (401), updateToken rejects and the session goes on with its token.
func (g *Gateway) emsToken(ctx context.Context, method string, body []byte, sess *conn) response {
	if method != http.MethodPost {
		return errorResponse(chorus.ErrMethod)
	}
	var req emsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return errorResponse(chorus.Wrap(chorus.ErrInvalidJSON, err))
	}
	if req.FPAToken == "" {
		return errorResponse(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: fpa_token is required"))
	}
	var claims *token.Claims
	var svc *chorus.Service
	if sess != nil {
		auth, st := sess.authenticate(ctx, req.FPAToken, true)
		if st != nil {
			return errorResponse(&chorus.Error{Status: st.Code, Code: st.ErrorCode, Message: st.Description})
		}
		if auth.claims.Identity != sess.claims.Identity || auth.svc.SID != sess.svc.SID {
			return errorResponse(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: identity or service differs from the session's"))
		}
		claims, svc = auth.claims, auth.svc
	} else {
		var e *chorus.Error
		if claims, svc, e = g.verify(ctx, req.FPAToken); e != nil {
			return errorResponse(e)
		}
	}
	status := "NEW"
	if req.ContinuationToken != "" {
		status = "UPDATED"
	}
	ttl := int64(claims.Expires.Sub(g.cfg.Now()) / time.Second)
	return jsonResponse(http.StatusOK, emsReply{
		Token:             req.FPAToken,
		TTL:               max(ttl, 0),
		Status:            emsStatus{Status: status},
		Identity:          claims.Identity,
		AccountSID:        claims.Subject,
		InstanceSIDs:      map[string]string{"data_sync": svc.SID},
		ContinuationToken: "ct_" + protocol.NewID()[2:],
	})
}

// verify checks an access token that arrives outside a session (the EMS
// exchange, plain-HTTP CDS requests) and resolves its service. Errors are
// 401 for the token and 403 for the grant or service (the EMS client gives
// up on those two and retries anything else), or 500.
func (g *Gateway) verify(ctx context.Context, raw string) (*token.Claims, *chorus.Service, *chorus.Error) {
	v := *g.cfg.Verifier
	var key *chorus.APIKey // the key that verified the token
	keys := v.Keys
	v.Keys = func(ctx context.Context, sid string) (*chorus.APIKey, error) {
		k, err := keys(ctx, sid)
		if err == nil {
			key = k
		}
		return k, err
	}
	claims, err := v.Verify(ctx, raw)
	if err != nil {
		return nil, nil, g.edgeError(err)
	}
	if claims.Sync == nil {
		return nil, nil, chorus.Errorf(chorus.ErrForbidden, "Access Token has no data_sync grant")
	}
	mark := engine.AuthTokenMark(claims.ID, claims.Issuer, claims.IssuedAt)
	if ok, err := g.cfg.Engine.AuthTokenMarkValid(ctx, claims.Subject, mark, keySecret(key)); err != nil {
		return nil, nil, g.edgeError(err)
	} else if !ok {
		return nil, nil, errAuthTokenRotated
	}
	sid := claims.Sync.ServiceSID
	if sid == "" {
		sid = "default"
	}
	svc, err := g.cfg.Engine.Service(ctx, claims.Subject, sid)
	if err != nil {
		if e := chorus.AsError(err); e.Status < 500 {
			return nil, nil, chorus.Errorf(chorus.ErrForbidden, "%s", e.Message)
		}
		return nil, nil, g.edgeError(err)
	}
	return claims, svc, nil
}

// edgeError logs an unexpected error once and hides it.
func (g *Gateway) edgeError(err error) *chorus.Error {
	e := chorus.AsError(err)
	if e.Status >= 500 {
		g.log.Error("gateway: verify token", slog.Any(logError, err))
		if e.Status == http.StatusServiceUnavailable {
			return chorus.ErrUnavailable // the store is out of reach: the client's to retry
		}
		return chorus.ErrInternal
	}
	return e
}

// ServeEMSToken answers the EMS token exchange of twilio-sync 0.5–0.7 over
// plain HTTP (POST /v1/token; OPTIONS for the browser's CORS preflight).
// The body carries the token, so any Origin may call it: it proves nothing
// a caller does not already hold.
func (g *Gateway) ServeEMSToken(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var resp response
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, emsMaxBody))
	if err != nil {
		resp = errorResponse(chorus.Errorf(chorus.ErrTooLarge, "Request entity too large"))
	} else {
		resp = g.emsToken(r.Context(), r.Method, body, nil)
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}
