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
// Tokens: when the server announces token_about_to_expire, or closes the
// session with 410, or rejects init because the token expired, the client
// asks Options.TokenProvider for a new token (an update on the live
// session, or a new init). Without a provider an expired session ends and
// calls fail with the server's error.
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
// a time. Callbacks may call any method of the client (including writes),
// but a callback or an undrained Events channel holds up the delivery of
// every later event of that Client; the queue in front of the dispatcher
// is unbounded, so events are never dropped. Lock order: Client.mu before
// entity.mu; neither is held while sending or waiting.
package client
