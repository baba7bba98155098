// Package client is a Go client for Chorus and Twilio Sync. It speaks
// Twilsock V3.0 over one WebSocket, the protocol of the official JavaScript
// SDK, and mirrors that SDK's model: documents, lists, maps and message
// streams, each opened by SID or unique name and kept live by a
// subscription.
//
//	c, err := client.New(ctx, tok, client.Options{URL: "http://127.0.0.1:3000"})
//	doc, err := c.Document(ctx, "game", client.OpenOrCreate)
//	err = doc.Set(ctx, json.RawMessage(`{"turn":"x"}`))
//	for ev := range doc.Events() { … }
//
// # Sessions
//
// New dials the gateway, sends init and returns once the server accepted
// the token. If the connection drops, the client reconnects with
// exponential backoff (Options.MinBackoff..MaxBackoff, ±20 %), sends init
// again and re-establishes every open object's subscription from the last
// event it delivered, so the server replays what was missed. Events are
// deduplicated per object by event id, and delivered once, in id order.
// Requests made while disconnected wait for the next session (bounded by
// their ctx); requests in flight when the socket drops fail with
// ErrDisconnected and are not retried, except reads, which are retried once.
//
// # Handles
//
// Each Document, List, Map or Stream call returns a new handle, even for
// an object this Client has open already: the handles of one object share
// its subscription and state (Data, Revision, LastEventID), but each has
// its own Events channels and callbacks, and Close ends that handle alone
// (a second Close does nothing). The subscription is canceled when the
// last handle is closed. A handle's events end with the object's removal
// (a *_removed event), or with EventSubscriptionFailed when the server
// ends the subscription (e.g. 403/54007 when the identity loses read
// access); either way the Events channels are closed after that event,
// and Err reports a failure. Open the object again to subscribe again.
//
// Tokens: when the server announces token_about_to_expire, or closes the
// session with 410, or rejects init because the token expired, the client
// asks Options.TokenProvider for a new token (an update on the live
// session, or a new init). One renewal runs at a time, and a token that
// came from a renewal (or UpdateToken) is renewed no sooner than half-way
// through the lifetime it had left when it arrived, so a provider of
// tokens shorter than the server's 3-minute warning is not called in a
// loop. A provider that fails is asked again with the reconnect backoff,
// 8 times (32 s with the default backoff) before the client gives up.
// Without a provider an expired session ends. A client that gives up
// (an expired or refused token) fails every call with the server's error,
// and every open handle gets EventSubscriptionFailed with it, after which
// its Events channels are closed.
//
// Errors from the server arrive as *chorus.Error with the HTTP status and
// the Twilio code of the response body (e.g. 404/54100, 412/54103,
// 413/54006); use errors.Is(err, chorus.ErrDocumentNotFound).
//
// # Concurrency
//
// A Client and every object handle are safe for concurrent use. Each
// session runs one reader goroutine (it decodes frames, answers acks and
// routes replies and events; it never blocks on the application) and one
// writer goroutine (the only one that writes to the socket). A supervisor
// goroutine dials and reconnects, and one dispatcher goroutine per Client
// runs callbacks and feeds Events channels, in arrival order, one event at
// a time. Callbacks may call any method of the client (including writes
// and Client.Close, which then does not wait for the callback to return),
// but a callback or an undrained Events channel of an open handle holds up
// the delivery of every later event of that Client; a closed handle's
// channels never do. The queue in front of the dispatcher is unbounded, so
// events are never dropped. Lock order: Client.mu before entity.mu, and a
// handle's send lock before its own mutex before the dispatcher's; none of
// Client.mu, entity.mu and the handle's mutex is held while sending or
// waiting.
package client
