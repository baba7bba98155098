// Package server wires one Chorus node: the SQLite store, the in-process
// bus, the engine and the HTTP surface (REST v1 at /v1/, the Twilsock
// gateway at /v3/wsconnect, API v2010 Keys and auth token rotation at
// /2010-04-01/ and /v1/AuthTokens/, the admin API, the quickstart's /token
// endpoint and its static files at /, /healthz) on one listener.
//
// /token is a development convenience, on by intent only (DevTokens): it
// mints a new random identity, or renews the identity of a still-valid
// token it minted that the caller presents, never one the caller names; it
// answers only loopback requests to a loopback Host unless DevTokensPublic.
// /metrics is for loopback peers addressing this server by its own name
// (ownHost) unless MetricsPublic. With operator credentials (Config.Creds)
// every other account and main key is revoked at start.
//
// Every request passes the edge middleware (transport.go, browser.go,
// input.go, throttle.go): security headers and the refusal of cross-site
// API requests; for everything but the websocket a handler deadline and a
// body bound; for the APIs the NUL/UTF-8 check and the failed-login
// throttle. Run adds the HTTP timeouts, the optional connection caps and
// TLS (certificate reloaded by ReloadTLS).
//
// New opens everything, Run serves until its context is done and then shuts
// down in order (HTTP, gateway, engine, bus, store). A Server's Handler is
// safe for concurrent use, as is ReloadTLS; Run must be called at most once.
package server
