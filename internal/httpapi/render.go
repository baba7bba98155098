package httpapi

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// timeFormat is Twilio's date format: ISO 8601 UTC, whole seconds.
const timeFormat = "2006-01-02T15:04:05Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func fmtTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := fmtTime(*t)
	return &s
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// pageKey is the meta.key and array field of each kind's listing.
func pageKey(k chorus.Kind) string { return strings.ToLower(k.Collection()) }

// pathSegment escapes s as one path segment. "." and ".." are escaped
// too, since path cleaning would otherwise resolve them.
func pathSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

func serviceURL(base, svcSID string) string {
	return base + "/v1/Services/" + url.PathEscape(svcSID)
}

func objectURL(base, svcSID string, k chorus.Kind, sid string) string {
	return serviceURL(base, svcSID) + "/" + k.Collection() + "/" + url.PathEscape(sid)
}

func itemURL(base, svcSID string, it *chorus.Item) string {
	u := objectURL(base, svcSID, it.Kind, it.ObjectSID) + "/Items/"
	if it.Kind == chorus.KindMap {
		return u + pathSegment(it.Key)
	}
	return u + strconv.FormatInt(it.Index, 10)
}

func permissionURL(base, svcSID string, k chorus.Kind, p *chorus.Permission) string {
	return objectURL(base, svcSID, k, p.ObjectSID) + "/Permissions/" + pathSegment(p.Identity)
}

// serviceJSON is sync.v1.service.
type serviceJSON struct {
	SID                           string            `json:"sid"`
	UniqueName                    *string           `json:"unique_name"`
	AccountSID                    string            `json:"account_sid"`
	FriendlyName                  *string           `json:"friendly_name"`
	DateCreated                   string            `json:"date_created"`
	DateUpdated                   string            `json:"date_updated"`
	URL                           string            `json:"url"`
	WebhookURL                    *string           `json:"webhook_url"`
	WebhooksFromRestEnabled       bool              `json:"webhooks_from_rest_enabled"`
	ReachabilityWebhooksEnabled   bool              `json:"reachability_webhooks_enabled"`
	ACLEnabled                    bool              `json:"acl_enabled"`
	ReachabilityDebouncingEnabled bool              `json:"reachability_debouncing_enabled"`
	ReachabilityDebouncingWindow  int               `json:"reachability_debouncing_window"`
	Links                         map[string]string `json:"links"`
}

func renderService(base string, s *chorus.Service) serviceJSON {
	u := serviceURL(base, s.SID)
	return serviceJSON{
		SID:                           s.SID,
		UniqueName:                    nullString(s.UniqueName),
		AccountSID:                    s.AccountSID,
		FriendlyName:                  nullString(s.FriendlyName),
		DateCreated:                   fmtTime(s.DateCreated),
		DateUpdated:                   fmtTime(s.DateUpdated),
		URL:                           u,
		WebhookURL:                    nullString(s.WebhookURL),
		WebhooksFromRestEnabled:       s.WebhooksFromRestEnabled,
		ReachabilityWebhooksEnabled:   s.ReachabilityWebhooksEnabled,
		ACLEnabled:                    s.ACLEnabled,
		ReachabilityDebouncingEnabled: s.ReachabilityDebouncingEnabled,
		ReachabilityDebouncingWindow:  s.ReachabilityDebouncingWindow,
		Links: map[string]string{
			"documents": u + "/Documents",
			"lists":     u + "/Lists",
			"maps":      u + "/Maps",
			"streams":   u + "/Streams",
		},
	}
}

// documentJSON is sync.v1.service.document.
type documentJSON struct {
	SID         string          `json:"sid"`
	UniqueName  *string         `json:"unique_name"`
	AccountSID  string          `json:"account_sid"`
	ServiceSID  string          `json:"service_sid"`
	URL         string          `json:"url"`
	Links       documentLinks   `json:"links"`
	Revision    string          `json:"revision"`
	Data        json.RawMessage `json:"data"`
	DateExpires *string         `json:"date_expires"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	CreatedBy   string          `json:"created_by"`
}

// The links of objects are structs, not maps: encoding/json writes a
// struct's fields without building, reflecting on and sorting a map for
// every response (keys in the order Twilio sends them, which is also
// sorted).
type (
	documentLinks struct {
		Permissions string `json:"permissions"`
	}
	collectionLinks struct {
		Items       string `json:"items"`
		Permissions string `json:"permissions"`
	}
	streamLinks struct {
		Messages string `json:"messages"`
	}
)

// collectionJSON is sync.v1.service.sync_list and sync_map.
type collectionJSON struct {
	SID         string          `json:"sid"`
	UniqueName  *string         `json:"unique_name"`
	AccountSID  string          `json:"account_sid"`
	ServiceSID  string          `json:"service_sid"`
	URL         string          `json:"url"`
	Links       collectionLinks `json:"links"`
	Revision    string          `json:"revision"`
	DateExpires *string         `json:"date_expires"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	CreatedBy   string          `json:"created_by"`
}

// streamJSON is sync.v1.service.sync_stream.
type streamJSON struct {
	SID         string      `json:"sid"`
	UniqueName  *string     `json:"unique_name"`
	AccountSID  string      `json:"account_sid"`
	ServiceSID  string      `json:"service_sid"`
	URL         string      `json:"url"`
	Links       streamLinks `json:"links"`
	DateExpires *string     `json:"date_expires"`
	DateCreated string      `json:"date_created"`
	DateUpdated string      `json:"date_updated"`
	CreatedBy   string      `json:"created_by"`
}

// renderObject renders any kind of object with its kind's fields.
func renderObject(base string, svc *chorus.Service, o *chorus.Object) any {
	svcSID := o.ServiceSID
	if svcSID == "" {
		svcSID = svc.SID
	}
	acct := o.AccountSID
	if acct == "" {
		acct = svc.AccountSID
	}
	u := objectURL(base, svcSID, o.Kind, o.SID)
	switch o.Kind {
	case chorus.KindDocument:
		data := o.Data
		if len(data) == 0 {
			data = json.RawMessage("{}")
		}
		return documentJSON{
			SID: o.SID, UniqueName: nullString(o.UniqueName), AccountSID: acct, ServiceSID: svcSID,
			URL: u, Links: documentLinks{Permissions: u + "/Permissions"},
			Revision: o.RevisionString(), Data: data,
			DateExpires: fmtTimePtr(o.DateExpires), DateCreated: fmtTime(o.DateCreated), DateUpdated: fmtTime(o.DateUpdated),
			CreatedBy: o.CreatedBy,
		}
	case chorus.KindStream:
		return streamJSON{
			SID: o.SID, UniqueName: nullString(o.UniqueName), AccountSID: acct, ServiceSID: svcSID,
			URL: u, Links: streamLinks{Messages: u + "/Messages"},
			DateExpires: fmtTimePtr(o.DateExpires), DateCreated: fmtTime(o.DateCreated), DateUpdated: fmtTime(o.DateUpdated),
			CreatedBy: o.CreatedBy,
		}
	default:
		return collectionJSON{
			SID: o.SID, UniqueName: nullString(o.UniqueName), AccountSID: acct, ServiceSID: svcSID,
			URL: u, Links: collectionLinks{Items: u + "/Items", Permissions: u + "/Permissions"},
			Revision:    o.RevisionString(),
			DateExpires: fmtTimePtr(o.DateExpires), DateCreated: fmtTime(o.DateCreated), DateUpdated: fmtTime(o.DateUpdated),
			CreatedBy: o.CreatedBy,
		}
	}
}

// listItemJSON is sync.v1.service.sync_list.sync_list_item.
type listItemJSON struct {
	Index       int64           `json:"index"`
	AccountSID  string          `json:"account_sid"`
	ServiceSID  string          `json:"service_sid"`
	ListSID     string          `json:"list_sid"`
	URL         string          `json:"url"`
	Revision    string          `json:"revision"`
	Data        json.RawMessage `json:"data"`
	DateExpires *string         `json:"date_expires"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	CreatedBy   string          `json:"created_by"`
}

// mapItemJSON is sync.v1.service.sync_map.sync_map_item.
type mapItemJSON struct {
	Key         string          `json:"key"`
	AccountSID  string          `json:"account_sid"`
	ServiceSID  string          `json:"service_sid"`
	MapSID      string          `json:"map_sid"`
	URL         string          `json:"url"`
	Revision    string          `json:"revision"`
	Data        json.RawMessage `json:"data"`
	DateExpires *string         `json:"date_expires"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	CreatedBy   string          `json:"created_by"`
}

func renderItem(base string, svc *chorus.Service, it *chorus.Item) any {
	data := it.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	u := itemURL(base, svc.SID, it)
	if it.Kind == chorus.KindMap {
		return mapItemJSON{
			Key: it.Key, AccountSID: svc.AccountSID, ServiceSID: svc.SID, MapSID: it.ObjectSID,
			URL: u, Revision: it.RevisionString(), Data: data,
			DateExpires: fmtTimePtr(it.DateExpires), DateCreated: fmtTime(it.DateCreated), DateUpdated: fmtTime(it.DateUpdated),
			CreatedBy: it.CreatedBy,
		}
	}
	return listItemJSON{
		Index: it.Index, AccountSID: svc.AccountSID, ServiceSID: svc.SID, ListSID: it.ObjectSID,
		URL: u, Revision: it.RevisionString(), Data: data,
		DateExpires: fmtTimePtr(it.DateExpires), DateCreated: fmtTime(it.DateCreated), DateUpdated: fmtTime(it.DateUpdated),
		CreatedBy: it.CreatedBy,
	}
}

// permissionJSON is the document, list and map permission resource; only
// the object SID's field name differs, so it is rendered through a map-free
// struct per kind.
type documentPermissionJSON struct {
	AccountSID  string `json:"account_sid"`
	ServiceSID  string `json:"service_sid"`
	DocumentSID string `json:"document_sid"`
	Identity    string `json:"identity"`
	Read        bool   `json:"read"`
	Write       bool   `json:"write"`
	Manage      bool   `json:"manage"`
	URL         string `json:"url"`
}

type listPermissionJSON struct {
	AccountSID string `json:"account_sid"`
	ServiceSID string `json:"service_sid"`
	ListSID    string `json:"list_sid"`
	Identity   string `json:"identity"`
	Read       bool   `json:"read"`
	Write      bool   `json:"write"`
	Manage     bool   `json:"manage"`
	URL        string `json:"url"`
}

type mapPermissionJSON struct {
	AccountSID string `json:"account_sid"`
	ServiceSID string `json:"service_sid"`
	MapSID     string `json:"map_sid"`
	Identity   string `json:"identity"`
	Read       bool   `json:"read"`
	Write      bool   `json:"write"`
	Manage     bool   `json:"manage"`
	URL        string `json:"url"`
}

func renderPermission(base string, svc *chorus.Service, k chorus.Kind, p *chorus.Permission) any {
	u := permissionURL(base, svc.SID, k, p)
	switch k {
	case chorus.KindList:
		return listPermissionJSON{svc.AccountSID, svc.SID, p.ObjectSID, p.Identity, p.Read, p.Write, p.Manage, u}
	case chorus.KindMap:
		return mapPermissionJSON{svc.AccountSID, svc.SID, p.ObjectSID, p.Identity, p.Read, p.Write, p.Manage, u}
	}
	return documentPermissionJSON{svc.AccountSID, svc.SID, p.ObjectSID, p.Identity, p.Read, p.Write, p.Manage, u}
}

// metaJSON is the paging envelope's meta.
type metaJSON struct {
	FirstPageURL    string  `json:"first_page_url"`
	Key             string  `json:"key"`
	NextPageURL     *string `json:"next_page_url"`
	Page            int     `json:"page"`
	PageSize        int     `json:"page_size"`
	PreviousPageURL *string `json:"previous_page_url"`
	URL             string  `json:"url"`
}

// pageURL builds a listing URL: filters first, then PageSize, Page and
// PageToken, as Twilio orders them.
func pageURL(collURL string, p pageParams, size, page int, token string) string {
	var b strings.Builder
	b.WriteString(collURL)
	sep := byte('?')
	add := func(k, v string) {
		b.WriteByte(sep)
		sep = '&'
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(v))
	}
	for _, f := range p.filters {
		add(f.k, f.v)
	}
	add("PageSize", strconv.Itoa(size))
	add("Page", strconv.Itoa(page))
	if token != "" {
		add("PageToken", token)
	}
	return b.String()
}

// pageMeta builds meta for a page served at collURL (absolute, no query).
func pageMeta(collURL, key string, p pageParams, pageSize int, next, prev string) metaJSON {
	if pageSize <= 0 {
		pageSize = p.size
	}
	if pageSize <= 0 {
		pageSize = chorus.DefaultPageSize
	}
	m := metaJSON{
		FirstPageURL: pageURL(collURL, p, pageSize, 0, ""),
		Key:          key,
		Page:         p.page,
		PageSize:     pageSize,
		URL:          pageURL(collURL, p, pageSize, p.page, p.token),
	}
	if next != "" {
		s := pageURL(collURL, p, pageSize, p.page+1, next)
		m.NextPageURL = &s
	}
	// Page 0 is the first page (first_page_url): an item listing's From
	// starts the listing, and what lies before it is not a page of it.
	if prev != "" && p.page > 0 {
		s := pageURL(collURL, p, pageSize, p.page-1, prev)
		m.PreviousPageURL = &s
	}
	return m
}

// renderPage renders a page of T as {"<key>": [...], "meta": {...}}.
func renderPage[T any](collURL, key string, p pageParams, pg engine.Page[T], render func(T) any) map[string]any {
	out := make([]any, 0, len(pg.Items))
	for _, it := range pg.Items {
		out = append(out, render(it))
	}
	return map[string]any{
		key:    out,
		"meta": pageMeta(collURL, key, p, pg.PageSize, pg.NextToken, pg.PrevToken),
	}
}
