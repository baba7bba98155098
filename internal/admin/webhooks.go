package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// WebhookHealth reports the webhooks of services, and lists, replays and
// purges the abandoned ones; *webhook.Dispatcher implements it.
type WebhookHealth interface {
	Health(ctx context.Context, services []*chorus.Service) ([]webhook.ServiceHealth, error)
	AbandonedWebhooks(ctx context.Context, sid string, beforeSeq int64, limit int) (*webhook.AbandonedPage, error)
	Replay(ctx context.Context, sid string) (replayed, left int, err error)
	Purge(ctx context.Context, sid string) (int, error)
}

var _ WebhookHealth = (*webhook.Dispatcher)(nil)

// maxWebhookServices bounds the services GET /admin/v1/Webhooks reports.
const maxWebhookServices = 1000

// webhooksJSON is the body of GET /admin/v1/Webhooks: the webhook health
// of each of the account's services. Backlogs are cluster-wide; counters
// and recent failures are those of the node that answers (the delivering
// node has them).
type webhooksJSON struct {
	Services []webhook.ServiceHealth `json:"services"`
}

func (h *handler) webhooks(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := emptyBody(w, r); err != nil {
		return err
	}
	if h.hooks == nil {
		return chorus.ErrNotFound
	}
	var services []*chorus.Service
	req := engine.PageRequest{PageSize: 1000}
	for len(services) < maxWebhookServices {
		page, err := h.eng.Services(r.Context(), c.account, req)
		if err != nil {
			return err
		}
		services = append(services, page.Items...)
		if page.NextToken == "" {
			break
		}
		req.Token = page.NextToken
	}
	out, err := h.hooks.Health(r.Context(), services)
	if err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusOK, webhooksJSON{Services: out})
	return nil
}

// Abandoned webhooks: GET /admin/v1/Webhooks/{ServiceSid}/Abandoned lists
// a service's (newest first, PageSize and PageToken), POST
// .../Abandoned/Replay sends them again, DELETE .../Abandoned deletes
// them. The service must be the caller's account's.

const (
	defaultAbandonedPage = 50
	maxAbandonedPage     = 1000
)

// abandonedJSON is one abandoned webhook as the console shows it: what it
// was about and why it was given up on, not its data.
type abandonedJSON struct {
	Seq              int64  `json:"seq"`
	EventType        string `json:"event_type"`
	ObjectSID        string `json:"object_sid,omitempty"`
	Identity         string `json:"identity,omitempty"`
	EventID          int64  `json:"event_id,omitempty"`
	IdempotencyToken string `json:"idempotency_token"`
	DateEvent        string `json:"date_event"`
	DateAbandoned    string `json:"date_abandoned"`
	Attempts         int    `json:"attempts"`
	LastStatus       int    `json:"last_status"`
	Reason           string `json:"reason"`
}

type abandonedPageJSON struct {
	ServiceSID string          `json:"service_sid"`
	Abandoned  []abandonedJSON `json:"abandoned"`
	Meta       struct {
		PageSize      int    `json:"page_size"`
		NextPageToken string `json:"next_page_token"`
	} `json:"meta"`
}

// serviceOf returns the caller's service named by the request's path.
func (h *handler) serviceOf(r *http.Request, c *caller) (*chorus.Service, error) {
	if h.hooks == nil {
		return nil, chorus.ErrNotFound
	}
	return h.eng.Service(r.Context(), c.account, r.PathValue("service"))
}

var abandonedParams = []string{"PageSize", "PageToken"}

func (h *handler) abandoned(w http.ResponseWriter, r *http.Request, c *caller) error {
	q, err := twiliohttp.ReadForm(w, r, maxBodyBytes)
	if err != nil {
		return err
	}
	if err := twiliohttp.CheckParams(q, abandonedParams); err != nil {
		return err
	}
	size := defaultAbandonedPage
	if v := q.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAbandonedPage {
			return chorus.Errorf(chorus.ErrInvalidParameter, "PageSize must be an integer from 1 to %d", maxAbandonedPage)
		}
		size = n
	}
	var before int64
	if v := q.Get("PageToken"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return chorus.Errorf(chorus.ErrInvalidParameter, "Invalid PageToken")
		}
		before = n
	}
	svc, err := h.serviceOf(r, c)
	if err != nil {
		return err
	}
	page, err := h.hooks.AbandonedWebhooks(r.Context(), svc.SID, before, size)
	if err != nil {
		return err
	}
	out := abandonedPageJSON{ServiceSID: svc.SID, Abandoned: make([]abandonedJSON, 0, len(page.Webhooks))}
	out.Meta.PageSize = size
	if page.Next > 0 {
		out.Meta.NextPageToken = strconv.FormatInt(page.Next, 10)
	}
	for _, a := range page.Webhooks {
		ev := a.Event
		out.Abandoned = append(out.Abandoned, abandonedJSON{
			Seq: a.Seq, EventType: string(ev.Type), ObjectSID: ev.ObjectSID, Identity: ev.Identity, EventID: ev.ID,
			IdempotencyToken: webhook.IdempotencyToken(&a.OutboxEntry),
			DateEvent:        ev.DateCreated.UTC().Format(time.RFC3339),
			DateAbandoned:    a.DateAbandoned.UTC().Format(time.RFC3339),
			Attempts:         a.Attempts, LastStatus: a.LastStatus, Reason: a.LastError,
		})
	}
	twiliohttp.WriteJSON(w, http.StatusOK, out)
	return nil
}

// emptyBody refuses a request that carries parameters: the console's
// reads of the account, stats and webhooks, Replay and the deletion take
// none, and one sent must not be ignored.
func emptyBody(w http.ResponseWriter, r *http.Request) error {
	if len(r.URL.RawQuery) > 0 {
		return chorus.Errorf(chorus.ErrInvalidParameter, "This request takes no parameters")
	}
	form, err := twiliohttp.ReadForm(w, r, maxBodyBytes)
	if err != nil {
		return err
	}
	if len(form) > 0 {
		return chorus.Errorf(chorus.ErrInvalidParameter, "This request takes no parameters")
	}
	return nil
}

func (h *handler) replayAbandoned(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := emptyBody(w, r); err != nil {
		return err
	}
	svc, err := h.serviceOf(r, c)
	if err != nil {
		return err
	}
	n, left, err := h.hooks.Replay(r.Context(), svc.SID)
	if err != nil {
		return err
	}
	h.log.Info("admin: abandoned webhooks replayed", "service", svc.SID, "replayed", n, "left", left, "by", c.username)
	twiliohttp.WriteJSON(w, http.StatusOK, map[string]any{"service_sid": svc.SID, "replayed": n, "left": left})
	return nil
}

func (h *handler) purgeAbandoned(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := emptyBody(w, r); err != nil {
		return err
	}
	svc, err := h.serviceOf(r, c)
	if err != nil {
		return err
	}
	n, err := h.hooks.Purge(r.Context(), svc.SID)
	if err != nil {
		return err
	}
	h.log.Info("admin: abandoned webhooks purged", "service", svc.SID, "purged", n, "by", c.username)
	twiliohttp.WriteJSON(w, http.StatusOK, map[string]any{"service_sid": svc.SID, "purged": n})
	return nil
}
