// Package admin is the small JSON API behind the admin console at /console:
// live counts for the dashboard and access tokens that let the console watch
// Sync objects through the real twilio-sync SDK.
//
// It serves under /admin/v1/ (full request paths; mount it at /admin/ or
// /admin/v1/ without stripping the prefix):
//
//	POST /admin/v1/Session  Basic credentials (or a session, to renew it) ->
//	                        {"token", "expires_in", ...}: a console session
//	GET  /admin/v1/Account  who the credentials belong to
//	GET  /admin/v1/Stats    the operator's account: the node's connections,
//	                        subscriptions, events_per_second, writes,
//	                        uptime_seconds ("scope": "node"); any other
//	                        account: its own services count, node totals null
//	                        ("scope": "account")
//	POST /admin/v1/Tokens   form Identity (default "console"), ServiceSid
//	                        (SID or "default", the default), Ttl (seconds,
//	                        default 3600, at most token.MaxTTL) ->
//	                        {"identity", "token", "service_sid", "ttl"}; with
//	                        a console session the TTL is capped at what
//	                        remains of the session (engine.ConsoleSessionMaxAge
//	                        from its sign-in), and "ttl" says what was given
//
// Every request authenticates like REST v1 (engine.AuthenticateHeader):
// HTTP Basic with account SID + auth token or API key SID + secret, or a
// console session as "Authorization: Bearer chorus-session.…". The console
// signs in once with POST /admin/v1/Session and keeps only the session
// token, in memory (never in sessionStorage or a cookie): it expires after
// engine.ConsoleSessionTTL, the console renews it while open (never past
// engine.ConsoleSessionMaxAge from the sign-in), and it dies with the key
// or auth token that opened it. Errors are Twilio-style JSON
// bodies {code, message, more_info, status}.
//
// The operator (Config.OperatorAccount, the server's bootstrapped account)
// sees the node's totals in Stats; other accounts of a shared node do not.
//
// Tokens are how the console sees live updates: REST v1 has no push channel,
// so the console mints an ordinary Access Token here (signed with one of the
// authenticated account's API keys, the same way GET /token does for the
// quickstart) and opens the object with the unmodified twilio-sync browser
// SDK over /v3/wsconnect. The console never holds an API secret: when the
// caller signed in with an API key, that key signs (its secret read from
// the store); with the auth token, the account's oldest API key does.
//
// events_per_second is derived from engine.Stats().EventsPosted: each Stats
// request records a sample, and the rate is the difference to the oldest
// sample taken within the last RateWindow (or, if the API was not polled
// for longer, to the newest older sample). The first request reports 0.
//
// Concurrency: the handler is safe for concurrent use; the sample ring is
// guarded by a mutex. It starts no goroutines and needs no Close.
package admin
