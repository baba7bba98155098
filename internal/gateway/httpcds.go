package gateway

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
)

// ServeCDS answers CDS requests (/v3/Documents, /v3/Lists, /v3/Maps,
// /v3/Streams and their /v3/Services/{sid}/… forms) sent as plain HTTP.
// twilio-sync 0.5–0.7 send them that way, through twilio-transport's
// XMLHttpRequest fallback, whenever their websocket is not connected (the
// first calls after creating a client, or during a reconnect); the access
// token rides in X-Twilio-Token. Each request is verified on its own and
// runs the same routes as a tunnelled request, with an actor of its own;
// subscriptions exist only on the websocket. CORS is open: the token is
// the credential, never a cookie.
func (g *Gateway) ServeCDS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, If-Match, X-Twilio-Token, X-Twilio-Product-Id, Twilio-Sync-Client-Info, Twilio-Request-Id")
	h.Set("Access-Control-Max-Age", "600")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	resp := g.serveCDS(w, r)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

func (g *Gateway) serveCDS(w http.ResponseWriter, r *http.Request) response {
	ctx := r.Context()
	raw := r.Header.Get("X-Twilio-Token")
	if raw == "" {
		return errorResponse(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: X-Twilio-Token is required"))
	}
	claims, svc, e := g.verify(ctx, raw)
	if e != nil {
		return errorResponse(e)
	}
	req := &request{method: strings.ToUpper(r.Method), ifMatch: r.Header.Get("If-Match"), query: r.URL.Query()}
	for _, s := range strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/") {
		seg, err := url.PathUnescape(s)
		if err != nil {
			return errorResponse(chorus.Errorf(chorus.ErrNotFound, "Invalid path"))
		}
		req.segs = append(req.segs, seg)
	}
	base := g.cfg.PublicURL
	if base == "" {
		base = "http://" + r.Host
	}
	req.base = strings.TrimSuffix(base, "/")
	if req.method != http.MethodGet && req.method != http.MethodDelete {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(g.cfg.MaxFrameBytes)))
		if err != nil {
			return errorResponse(chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: body exceeds %d bytes", g.cfg.MaxFrameBytes))
		}
		req.body = body
	}
	// Only the object collections: 0.5–0.7 know nothing else, and routes
	// added for newer SDKs may need a live session.
	collection := 1 // /v3/{Collection}/… or /v3/Services/{sid}/{Collection}/…
	if len(req.segs) > 1 && req.segs[1] == "Services" {
		collection = 3
	}
	if len(req.segs) <= collection || req.segs[0] != "v3" || kindByCollection[req.segs[collection]] == "" {
		return errorResponse(chorus.ErrNotFound)
	}
	// A request-scoped session: route reads only g, the service, the
	// actor and the logger.
	c := &conn{g: g, id: "http-" + protocol.NewID()[2:], claims: claims, svc: svc}
	c.actor = engine.Actor{Identity: claims.Identity, EndpointID: c.id}
	return c.route(ctx, req)
}
