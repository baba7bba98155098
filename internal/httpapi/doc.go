// Package httpapi serves the Twilio Sync REST API v1 (/v1/Services/...) over
// the engine, wire-compatible with the official twilio-go, twilio-node (3.28
// on) and twilio-python helper libraries: HTTP Basic auth with account or API
// key credentials, PascalCase parameters in urlencoded or multipart/form-data
// bodies (any other body is refused, never read as "no parameters"),
// snake_case JSON resources with absolute url/links, Twilio error bodies,
// ETag/If-Match revisions and next_page_url paging.
//
// Concurrency: the handler returned by New is stateless apart from its
// immutable configuration and is safe for concurrent use by any number of
// requests; all shared state lives in the engine.
package httpapi
