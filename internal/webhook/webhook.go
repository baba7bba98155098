package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
)

// Lookup finds what a delivery needs: the event's service and its account.
type Lookup interface {
	Service(ctx context.Context, accountSID, sid string) (*chorus.Service, error)
	Account(ctx context.Context, sid string) (*chorus.Account, error)
}

// Config configures a Dispatcher.
type Config struct {
	Lookup  Lookup
	Client  *http.Client // default: 10 s timeout
	Logger  *slog.Logger
	Workers int // default 4
	Queue   int // default 10,000 events
}

// Dispatcher delivers webhooks in the background.
type Dispatcher struct {
	cfg     Config
	log     *slog.Logger
	queue   chan *chorus.Event
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	ctx     context.Context
	once    sync.Once
	lastLog atomic.Int64

	mu       sync.Mutex
	services map[string]cachedService // by service SID

	presence presence

	Sent, Failed, Dropped atomic.Uint64
}

// New starts a Dispatcher; Close stops it.
func New(cfg Config) *Dispatcher {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 10_000
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg: cfg, log: cfg.Logger.With("component", "webhook"), queue: make(chan *chorus.Event, cfg.Queue),
		ctx: ctx, cancel: cancel, services: make(map[string]cachedService),
		presence: presence{online: make(map[identityKey]int), pending: make(map[identityKey]*time.Timer)},
	}
	for range cfg.Workers {
		d.wg.Add(1)
		go d.work()
	}
	return d
}

// Observe queues committed events; it is the engine's Config.Observe.
func (d *Dispatcher) Observe(events []*chorus.Event) {
	for _, e := range events {
		if svc, fresh := d.cached(e.ServiceSID); fresh && !wants(svc, e) {
			continue // the common case: no webhook for this event; queue nothing
		}
		select {
		case d.queue <- e:
		default:
			d.Dropped.Add(1)
			d.warnRateLimited("webhook queue full: event dropped", "event", e.Type, "service", e.ServiceSID)
		}
	}
}

// Close stops the senders after the events already queued are sent or the
// context ends.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.once.Do(func() { close(d.queue) })
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		d.cancel()
		<-done
		return ctx.Err()
	}
}

func (d *Dispatcher) work() {
	defer d.wg.Done()
	for e := range d.queue {
		if err := d.deliver(d.ctx, e); err != nil {
			d.Failed.Add(1)
			d.warnRateLimited("webhook delivery failed", "event", e.Type, "service", e.ServiceSID, "err", err)
		}
	}
}

// serviceTTL is how long a service's webhook settings are cached: a busy
// object must not cost a service lookup per event.
const serviceTTL = time.Second

type cachedService struct {
	svc     *chorus.Service
	fetched time.Time
}

// wants reports whether svc's settings ask for a webhook of e.
func wants(svc *chorus.Service, e *chorus.Event) bool {
	switch {
	case svc.WebhookURL == "", e.FromREST && !svc.WebhooksFromRestEnabled:
		return false
	case e.Type == chorus.EventEndpointConnected || e.Type == chorus.EventEndpointDisconnected:
		return svc.ReachabilityWebhooksEnabled
	}
	return true
}

// cached returns the cached settings of service sid and whether they are
// fresh.
func (d *Dispatcher) cached(sid string) (*chorus.Service, bool) {
	d.mu.Lock()
	c, ok := d.services[sid]
	d.mu.Unlock()
	return c.svc, ok && time.Since(c.fetched) < serviceTTL
}

func (d *Dispatcher) service(ctx context.Context, accountSID, sid string) (*chorus.Service, error) {
	if svc, fresh := d.cached(sid); fresh {
		return svc, nil
	}
	svc, err := d.cfg.Lookup.Service(ctx, accountSID, sid)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if len(d.services) > 10_000 {
		clear(d.services)
	}
	d.services[sid] = cachedService{svc: svc, fetched: time.Now()}
	d.mu.Unlock()
	return svc, nil
}

// warnRateLimited logs at most once a second.
func (d *Dispatcher) warnRateLimited(msg string, args ...any) {
	now := time.Now().Unix()
	if last := d.lastLog.Load(); last != now && d.lastLog.CompareAndSwap(last, now) {
		d.log.Warn(msg, args...)
	}
}

func (d *Dispatcher) deliver(ctx context.Context, e *chorus.Event) error {
	svc, err := d.service(ctx, e.AccountSID, e.ServiceSID)
	if err != nil {
		return fmt.Errorf("webhook: service: %w", err)
	}
	if !wants(svc, e) {
		return nil
	}
	acct, err := d.cfg.Lookup.Account(ctx, e.AccountSID)
	if err != nil {
		return fmt.Errorf("webhook: account: %w", err)
	}
	params := Params(e)
	for attempt := 0; ; attempt++ {
		retry, err := d.post(ctx, svc.WebhookURL, acct.AuthToken, params)
		if err == nil {
			d.Sent.Add(1)
			return nil
		}
		if !retry || attempt == 1 || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *Dispatcher) post(ctx context.Context, target, authToken string, params url.Values) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(params.Encode()))
	if err != nil {
		return false, fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Chorus-Sync-Webhooks/1")
	req.Header.Set("X-Twilio-Signature", Signature(authToken, target, params))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return true, fmt.Errorf("webhook: post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return true, fmt.Errorf("webhook: %s answered %s", target, resp.Status)
	}
	if resp.StatusCode >= 300 {
		return false, fmt.Errorf("webhook: %s answered %s", target, resp.Status)
	}
	return false, nil
}

// Signature computes X-Twilio-Signature for a form POST to fullURL.
func Signature(authToken, fullURL string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// prefixes names each kind's parameters: DocumentSid, ListUniqueName, …
var prefixes = map[chorus.Kind]string{
	chorus.KindDocument: "Document", chorus.KindList: "List", chorus.KindMap: "Map", chorus.KindStream: "Stream",
}

// Params are the webhook form parameters of an event, with Twilio's names.
func Params(e *chorus.Event) url.Values {
	p := url.Values{}
	p.Set("AccountSid", e.AccountSID)
	p.Set("ServiceSid", e.ServiceSID)
	p.Set("EventType", string(e.Type))
	identity := e.Identity
	if identity == "" {
		identity = chorus.SystemIdentity
	}
	p.Set("Identity", identity)
	if e.EndpointID != "" {
		p.Set("EndpointId", e.EndpointID)
	}
	if pre, ok := prefixes[e.Kind]; ok {
		p.Set(pre+"Sid", e.ObjectSID)
		p.Set(pre+"UniqueName", e.UniqueName)
		if e.Revision != "" {
			p.Set(pre+"Revision", e.Revision)
		}
	}
	if e.ID > 0 {
		p.Set("EventId", strconv.FormatInt(e.ID, 10))
	}
	switch e.Type {
	case chorus.EventDocumentCreated, chorus.EventDocumentUpdated:
		p.Set("DocumentData", string(e.Data))
	case chorus.EventListContextUpdated:
		p.Set("ListContext", string(e.Data))
	case chorus.EventListItemAdded, chorus.EventListItemUpdated, chorus.EventListItemRemoved:
		p.Set("ItemIndex", strconv.FormatInt(e.ItemIndex, 10))
		setItem(p, e)
	case chorus.EventMapItemAdded, chorus.EventMapItemUpdated, chorus.EventMapItemRemoved:
		p.Set("ItemKey", e.ItemKey)
		setItem(p, e)
	case chorus.EventStreamMessagePublished:
		p.Set("MessageSid", e.MessageSID)
		p.Set("MessageData", string(e.Data))
	}
	return p
}

func setItem(p url.Values, e *chorus.Event) {
	p.Set("ItemRevision", e.ItemRevision)
	if e.ItemData != nil {
		p.Set("ItemData", string(e.ItemData))
	}
}
