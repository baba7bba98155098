package httpapi

import (
	"net/http"
	"strings"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// routes registers the 48 operations of REST v1.
//
// Map keys and identities are matched with a trailing {Key...} wildcard:
// twilio-go substitutes path parameters without escaping them, so a key
// "a/b" arrives either as a%2Fb (escaped by the caller) or as a/b; both
// decode to the same key (KeepKeyPath keeps ServeMux from cleaning "a//b"
// or "x/.." into another item's path).
func (a *api) routes() {
	allowed := map[string][]string{}
	// r registers an operation and the parameters it takes (params.go);
	// rc one that also takes an If-Match header (the others refuse one).
	r := func(pattern string, h handler, params ...string) { a.route(allowed, pattern, h, params, false) }
	rc := func(pattern string, h handler, params ...string) { a.route(allowed, pattern, h, params, true) }

	r("GET /v1/Services", a.listServices, pagingParams...)
	r("POST /v1/Services", a.createService, serviceParamNames...)
	r("GET /v1/Services/{Sid}", a.fetchService)
	r("POST /v1/Services/{Sid}", a.updateService, serviceParamNames...)
	r("DELETE /v1/Services/{Sid}", a.deleteService)

	for _, k := range chorus.Kinds {
		coll := "/v1/Services/{ServiceSid}/" + k.Collection()
		r("GET "+coll, a.listObjects(k), pagingParams...)
		r("POST "+coll, a.createObject(k), objectParams(k, true)...)
		r("GET "+coll+"/{Sid}", a.fetchObject(k))
		rc("POST "+coll+"/{Sid}", a.updateObject(k), objectParams(k, false)...)
		rc("DELETE "+coll+"/{Sid}", a.deleteObject(k))
	}

	lists := "/v1/Services/{ServiceSid}/Lists/{ListSid}/Items"
	r("GET "+lists, a.listItems(chorus.KindList), itemPageParam...)
	r("POST "+lists, a.createListItem, itemWriteParams...)
	r("GET "+lists+"/{Index}", a.fetchItem(chorus.KindList))
	rc("POST "+lists+"/{Index}", a.updateItem(chorus.KindList), itemWriteParams...)
	rc("DELETE "+lists+"/{Index}", a.deleteItem(chorus.KindList))

	maps := "/v1/Services/{ServiceSid}/Maps/{MapSid}/Items"
	r("GET "+maps, a.listItems(chorus.KindMap), itemPageParam...)
	r("POST "+maps, a.createMapItem, append([]string{"Key"}, itemWriteParams...)...)
	r("GET "+maps+"/{Key...}", a.fetchItem(chorus.KindMap))
	rc("POST "+maps+"/{Key...}", a.updateItem(chorus.KindMap), itemWriteParams...)
	rc("DELETE "+maps+"/{Key...}", a.deleteItem(chorus.KindMap))

	for _, k := range []chorus.Kind{chorus.KindDocument, chorus.KindList, chorus.KindMap} {
		perms := "/v1/Services/{ServiceSid}/" + k.Collection() + "/{" + objectParam(k) + "}/Permissions"
		r("GET "+perms, a.listPermissions(k), pagingParams...)
		r("GET "+perms+"/{Identity...}", a.fetchPermission(k))
		r("POST "+perms+"/{Identity...}", a.updatePermission(k), permParams...)
		r("DELETE "+perms+"/{Identity...}", a.deletePermission(k))
	}

	r("POST /v1/Services/{ServiceSid}/Streams/{StreamSid}/Messages", a.createStreamMessage, "Data")

	a.fallbacks(allowed)
}

// objectParam is the path wildcard naming the parent object of
// sub-resources (items, permissions, messages).
func objectParam(k chorus.Kind) string {
	switch k {
	case chorus.KindDocument:
		return "DocumentSid"
	case chorus.KindList:
		return "ListSid"
	case chorus.KindMap:
		return "MapSid"
	case chorus.KindStream:
		return "StreamSid"
	}
	return ""
}

// collURL is the absolute URL of the collection being listed, as the
// client addressed it.
func collURL(r *http.Request, c *call) string { return c.base + r.URL.EscapedPath() }

// Services.

func serviceParams(c *call) (engine.ServiceParams, error) {
	var p engine.ServiceParams
	var err error
	p.FriendlyName = optString(c.form, "FriendlyName")
	p.WebhookURL = optString(c.form, "WebhookUrl")
	if p.ReachabilityWebhooksEnabled, err = optBool(c.form, "ReachabilityWebhooksEnabled"); err != nil {
		return p, err
	}
	if p.ACLEnabled, err = optBool(c.form, "AclEnabled"); err != nil {
		return p, err
	}
	if p.ReachabilityDebouncingEnabled, err = optBool(c.form, "ReachabilityDebouncingEnabled"); err != nil {
		return p, err
	}
	if p.ReachabilityDebouncingWindow, err = optInt(c.form, "ReachabilityDebouncingWindow"); err != nil {
		return p, err
	}
	if p.WebhooksFromRestEnabled, err = optBool(c.form, "WebhooksFromRestEnabled"); err != nil {
		return p, err
	}
	return p, nil
}

func (a *api) listServices(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := parsePage(c.form)
	if err != nil {
		return err
	}
	pg, err := a.eng.Services(r.Context(), c.account, engine.PageRequest{PageSize: p.size, Token: p.token})
	if err != nil {
		return err
	}
	twiliohttp.WriteJSONFor(w, r, http.StatusOK, renderPage(collURL(r, c), "services", p, pg, func(s *chorus.Service) any {
		return renderService(c.base, s)
	}))
	return nil
}

func (a *api) createService(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := serviceParams(c)
	if err != nil {
		return err
	}
	s, err := a.eng.CreateService(r.Context(), c.account, p)
	if err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusCreated, renderService(c.base, s))
	return nil
}

func (a *api) fetchService(w http.ResponseWriter, r *http.Request, c *call) error {
	s, err := a.eng.Service(r.Context(), c.account, r.PathValue("Sid"))
	if err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusOK, renderService(c.base, s))
	return nil
}

func (a *api) updateService(w http.ResponseWriter, r *http.Request, c *call) error {
	p, err := serviceParams(c)
	if err != nil {
		return err
	}
	if p == (engine.ServiceParams{}) {
		// As for the objects' updates: answering 200 would hide that
		// nothing changed (twilio-node 3.28 drops the parameters it does
		// not know, such as WebhooksFromRestEnabled, and sends none).
		return chorus.Errorf(chorus.ErrNoParameters, "No parameters specified: an update of a Service takes at least one of %s",
			strings.Join(serviceParamNames, ", "))
	}
	s, err := a.eng.UpdateService(r.Context(), c.account, r.PathValue("Sid"), p)
	if err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusOK, renderService(c.base, s))
	return nil
}

func (a *api) deleteService(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := a.eng.DeleteService(r.Context(), c.account, r.PathValue("Sid")); err != nil {
		return err
	}
	writeNoContent(w)
	return nil
}

// Documents, Lists, Maps, Streams.

// objectTTL parses the TTL of an object create or update: documents and
// streams take Ttl; lists and maps CollectionTtl with Ttl as its alias.
func objectTTL(c *call, k chorus.Kind) (*int, error) {
	if k == chorus.KindList || k == chorus.KindMap {
		return ttlPair(c.form, "CollectionTtl", "Ttl")
	}
	return optTTL(c.form, "Ttl")
}

func (a *api) listObjects(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		p, err := parsePage(c.form)
		if err != nil {
			return err
		}
		pg, err := a.eng.Objects(r.Context(), engine.SystemActor(), c.svc, k, engine.PageRequest{PageSize: p.size, Token: p.token})
		if err != nil {
			return err
		}
		twiliohttp.WriteJSONFor(w, r, http.StatusOK, renderPage(collURL(r, c), pageKey(k), p, pg, func(o *chorus.Object) any {
			return renderObject(c.base, c.svc, o)
		}))
		return nil
	}
}

func (a *api) createObject(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		var p engine.CreateObject
		var err error
		p.UniqueName, _ = value(c.form, "UniqueName")
		if k == chorus.KindDocument {
			if p.Data, err = optData(c.form, chorus.MaxDataBytes); err != nil {
				return err
			}
		}
		if p.TTL, err = objectTTL(c, k); err != nil {
			return err
		}
		o, err := a.eng.CreateObject(r.Context(), engine.SystemActor(), c.svc, k, p)
		if err != nil {
			return err
		}
		a.writeObject(w, http.StatusCreated, c, o)
		return nil
	}
}

func (a *api) fetchObject(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		o, err := a.eng.FetchObject(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue("Sid"))
		if err != nil {
			return err
		}
		a.writeObject(w, http.StatusOK, c, o)
		return nil
	}
}

func (a *api) updateObject(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		var p engine.UpdateObject
		var err error
		if k == chorus.KindDocument {
			if p.Data, err = optData(c.form, chorus.MaxDataBytes); err != nil {
				return err
			}
		}
		if p.IfMatch, err = objectIfMatch(r, k); err != nil {
			return err
		}
		if p.TTL, err = objectTTL(c, k); err != nil {
			return err
		}
		o, err := a.eng.UpdateObject(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue("Sid"), p)
		if err != nil {
			return err
		}
		a.writeObject(w, http.StatusOK, c, o)
		return nil
	}
}

func (a *api) deleteObject(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		im, err := objectIfMatch(r, k)
		if err != nil {
			return err
		}
		if _, err := a.eng.DeleteObjectIf(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue("Sid"), im); err != nil {
			return err
		}
		writeNoContent(w)
		return nil
	}
}

// objectIfMatch reads the If-Match header of an object's update or
// removal: a document's revision, which the write must match. Lists, maps
// and streams take none on Twilio: one sent is refused, not ignored.
func objectIfMatch(r *http.Request, k chorus.Kind) (string, error) {
	h := r.Header.Values("If-Match")
	if k != chorus.KindDocument && len(h) > 0 && (len(h) > 1 || strings.TrimSpace(h[0]) != "*") { // "*": any version
		return "", chorus.Errorf(chorus.ErrInvalidParameter, "If-Match applies to Documents and to list and map items, not to a %s", k)
	}
	return ifMatch(h)
}

func (a *api) writeObject(w http.ResponseWriter, status int, c *call, o *chorus.Object) {
	if o.Kind == chorus.KindDocument {
		setETag(w, o.RevisionString())
	}
	twiliohttp.WriteJSON(w, status, objectView{c.base, c.svc, o})
}

// List and Map items.

// itemTTLs parses ItemTtl (alias Ttl) and CollectionTtl.
func itemTTLs(c *call) (item, coll *int, err error) {
	if item, err = ttlPair(c.form, "ItemTtl", "Ttl"); err != nil {
		return nil, nil, err
	}
	if coll, err = optTTL(c.form, "CollectionTtl"); err != nil {
		return nil, nil, err
	}
	return item, coll, nil
}

// itemRef parses the {Index} or {Key...} of an item path.
func itemRef(r *http.Request, k chorus.Kind) (chorus.ItemRef, error) {
	if k == chorus.KindMap {
		return chorus.ItemRef{Key: r.PathValue("Key")}, nil
	}
	i, err := parseIndex(r.PathValue("Index"))
	return chorus.ItemRef{Index: i}, err
}

func (a *api) listItems(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		p, err := parseItemPage(c.form)
		if err != nil {
			return err
		}
		pg, err := a.eng.Items(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue(objectParam(k)), engine.ItemPageRequest{
			Order:    p.filter("Order"),
			From:     p.filter("From"),
			Bounds:   p.filter("Bounds"),
			PageSize: p.size,
			Token:    p.token,
		})
		if err != nil {
			return err
		}
		p.setFilters(pg.Filters)
		twiliohttp.WriteJSONFor(w, r, http.StatusOK, renderPage(collURL(r, c), "items", p, pg, func(it *chorus.Item) any {
			return renderItem(c.base, c.svc, it)
		}))
		return nil
	}
}

func (a *api) createListItem(w http.ResponseWriter, r *http.Request, c *call) error {
	var iw engine.ItemWrite
	var err error
	if iw.Data, err = reqData(c.form, chorus.MaxDataBytes, chorus.ErrListItemData); err != nil {
		return err
	}
	if iw.ItemTTL, iw.CollectionTTL, err = itemTTLs(c); err != nil {
		return err
	}
	it, err := a.eng.AddListItem(r.Context(), engine.SystemActor(), c.svc, r.PathValue("ListSid"), iw)
	if err != nil {
		return err
	}
	a.writeItem(w, http.StatusCreated, c, it)
	return nil
}

func (a *api) createMapItem(w http.ResponseWriter, r *http.Request, c *call) error {
	key, ok := value(c.form, "Key")
	if !ok {
		return chorus.Errorf(chorus.ErrMapItemKey, "Missing required parameter Key")
	}
	iw := engine.ItemWrite{Mode: engine.CreateOnly}
	var err error
	if iw.Data, err = reqData(c.form, chorus.MaxDataBytes, chorus.ErrMapItemData); err != nil {
		return err
	}
	if iw.ItemTTL, iw.CollectionTTL, err = itemTTLs(c); err != nil {
		return err
	}
	it, _, err := a.eng.WriteItem(r.Context(), engine.SystemActor(), c.svc, chorus.KindMap, r.PathValue("MapSid"), chorus.ItemRef{Key: key}, iw)
	if err != nil {
		return err
	}
	a.writeItem(w, http.StatusCreated, c, it)
	return nil
}

func (a *api) fetchItem(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		ref, err := itemRef(r, k)
		if err != nil {
			return err
		}
		it, err := a.eng.Item(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue(objectParam(k)), ref)
		if err != nil {
			return err
		}
		a.writeItem(w, http.StatusOK, c, it)
		return nil
	}
}

func (a *api) updateItem(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		ref, err := itemRef(r, k)
		if err != nil {
			return err
		}
		iw := engine.ItemWrite{Mode: engine.Update}
		if iw.Data, err = optData(c.form, chorus.MaxDataBytes); err != nil {
			return err
		}
		if iw.ItemTTL, iw.CollectionTTL, err = itemTTLs(c); err != nil {
			return err
		}
		if iw.CollectionTTL != nil && iw.Data == nil && iw.ItemTTL == nil {
			// Twilio: CollectionTtl "can only be used when the item's data
			// or ttl is updated in the same request".
			return chorus.Errorf(chorus.ErrNoParameters, "CollectionTtl can only be used with Data or Ttl in the same request")
		}
		if iw.IfMatch, err = ifMatch(r.Header.Values("If-Match")); err != nil {
			return err
		}
		it, _, err := a.eng.WriteItem(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue(objectParam(k)), ref, iw)
		if err != nil {
			return err
		}
		a.writeItem(w, http.StatusOK, c, it)
		return nil
	}
}

func (a *api) deleteItem(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		ref, err := itemRef(r, k)
		if err != nil {
			return err
		}
		im, err := ifMatch(r.Header.Values("If-Match"))
		if err != nil {
			return err
		}
		if _, err := a.eng.DeleteItem(r.Context(), engine.SystemActor(), c.svc, k, r.PathValue(objectParam(k)), ref, im); err != nil {
			return err
		}
		writeNoContent(w)
		return nil
	}
}

func (a *api) writeItem(w http.ResponseWriter, status int, c *call, it *chorus.Item) {
	setETag(w, it.RevisionString())
	twiliohttp.WriteJSON(w, status, itemView{c.base, c.svc, it})
}

// Permissions.

func (a *api) listPermissions(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		p, err := parsePage(c.form)
		if err != nil {
			return err
		}
		pg, err := a.eng.Permissions(r.Context(), c.svc, k, r.PathValue(objectParam(k)), engine.PageRequest{PageSize: p.size, Token: p.token})
		if err != nil {
			return err
		}
		twiliohttp.WriteJSONFor(w, r, http.StatusOK, renderPage(collURL(r, c), "permissions", p, pg, func(pm *chorus.Permission) any {
			return renderPermission(c.base, c.svc, k, pm)
		}))
		return nil
	}
}

func (a *api) fetchPermission(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		p, err := a.eng.Permission(r.Context(), c.svc, k, r.PathValue(objectParam(k)), r.PathValue("Identity"))
		if err != nil {
			return err
		}
		twiliohttp.WriteJSON(w, http.StatusOK, renderPermission(c.base, c.svc, k, p))
		return nil
	}
}

func (a *api) updatePermission(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		p := chorus.Permission{Identity: r.PathValue("Identity")}
		var err error
		if p.Read, err = reqBool(c.form, "Read"); err != nil {
			return err
		}
		if p.Write, err = reqBool(c.form, "Write"); err != nil {
			return err
		}
		if p.Manage, err = reqBool(c.form, "Manage"); err != nil {
			return err
		}
		got, err := a.eng.SetPermission(r.Context(), c.svc, k, r.PathValue(objectParam(k)), p)
		if err != nil {
			return err
		}
		twiliohttp.WriteJSON(w, http.StatusOK, renderPermission(c.base, c.svc, k, got))
		return nil
	}
}

func (a *api) deletePermission(k chorus.Kind) handler {
	return func(w http.ResponseWriter, r *http.Request, c *call) error {
		if err := a.eng.DeletePermission(r.Context(), c.svc, k, r.PathValue(objectParam(k)), r.PathValue("Identity")); err != nil {
			return err
		}
		writeNoContent(w)
		return nil
	}
}

// Stream messages.

func (a *api) createStreamMessage(w http.ResponseWriter, r *http.Request, c *call) error {
	data, err := reqData(c.form, chorus.MaxMessageBytes, chorus.ErrStreamMessageData)
	if err != nil {
		return err
	}
	m, err := a.eng.PublishMessage(r.Context(), engine.SystemActor(), c.svc, r.PathValue("StreamSid"), data)
	if err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusCreated, streamMessageView{m})
	return nil
}
