package engine

import (
	"context"

	"github.com/chorus-sync/chorus"
)

// publishAccess tells every node's gateway, through the Bus, that access
// changed (a chorus.EventType.Control event), after the change committed:
// a gateway that hears of it re-reads the committed state. The event is
// not logged and not observed (webhooks); losing it is covered by the
// gateways' re-check when the Bus reports a loss (Gateway.Resync).
func (e *Engine) publishAccess(ctx context.Context, ev *chorus.Event) {
	if e.cfg.Bus == nil {
		return
	}
	ev.DateCreated = e.now()
	ev.FromREST = true
	if err := e.cfg.Bus.Publish(context.WithoutCancel(ctx), ev); err != nil {
		e.markUnposted() // a resync announcement has the other nodes re-check
		e.log.Warn("publish access change", "err", err, "type", string(ev.Type), "object", ev.ObjectSID)
	}
}
