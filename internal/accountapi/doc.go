// Package accountapi is the part of Twilio's account APIs that manages
// credentials, so that the `twilio` and `twilio-go` helper libraries' key
// and auth token calls work against Chorus:
//
//	API v2010 Keys (api.twilio.com):
//	  POST   /2010-04-01/Accounts/{AC}/Keys.json           create a standard key; the answer holds its secret, once
//	  GET    /2010-04-01/Accounts/{AC}/Keys.json           list (Page, PageSize; Twilio's paging fields)
//	  GET    /2010-04-01/Accounts/{AC}/Keys/{SK}.json      fetch
//	  POST   /2010-04-01/Accounts/{AC}/Keys/{SK}.json      update FriendlyName
//	  DELETE /2010-04-01/Accounts/{AC}/Keys/{SK}.json      revoke
//	Auth token rotation (accounts.twilio.com /v1, and the same under
//	/2010-04-01/Accounts/{AC}/AuthTokens/…json):
//	  POST   /v1/AuthTokens/Secondary                      create a secondary auth token
//	  DELETE /v1/AuthTokens/Secondary                      drop it
//	  POST   /v1/AuthTokens/Promote                        the secondary becomes primary; the old primary is revoked
//
// Requests authenticate with HTTP Basic only (account SID + auth token, or
// API key SID + secret). A Bearer credential, in particular a console
// session of the admin console, is refused on every endpoint with 403
// (20003) before it is looked at: a session ends 12 hours after its
// sign-in, and must not mint keys or auth tokens that outlive it (the
// console itself never calls these endpoints). Only the auth token or a
// main API key may manage credentials, as on Twilio; a standard key gets
// 403 with code 20003, and
// an {AC} other than the caller's account 404 (20404). Times are RFC 2822
// in Keys, as API v2010 writes them, and ISO 8601 in the auth token
// resources, as the Accounts API v1 does.
//
// Deleting a key takes effect at once: access token verification reads
// the store on every request, and the engine drops its cache of REST
// credentials on every node (through the bus) before the delete is
// answered. Live websocket
// sessions opened with tokens the key signed are closed through the
// SessionRevoker, when one is configured.
//
// Concurrency: the handler is safe for concurrent use and holds no state
// of its own.
package accountapi
