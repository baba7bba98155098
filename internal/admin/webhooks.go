package admin

import (
	"context"
	"net/http"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// WebhookHealth reports the webhooks of services; *webhook.Dispatcher
// implements it.
type WebhookHealth interface {
	Health(ctx context.Context, services []*chorus.Service) ([]webhook.ServiceHealth, error)
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
