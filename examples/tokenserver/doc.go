// Command tokenserver is a minimal backend that mints Twilio access tokens
// for Chorus the way a production app does: it authenticates its own users
// first (here HTTP Basic against TOKENSERVER_USERS, standing in for your
// real login) and signs a token for that user's identity only, with an API
// key of the Chorus account. Chorus's own /token endpoint is a development
// convenience that is off in production; this is what replaces it.
//
//	TWILIO_ACCOUNT_SID=AC… TWILIO_API_KEY=SK… TWILIO_API_SECRET=… \
//	TWILIO_SYNC_SERVICE_SID=IS… TOKENSERVER_USERS='alice:s3cret,bob:hunter22' \
//	go run ./examples/tokenserver --listen 127.0.0.1:8080
//
//	curl -u alice:s3cret -X POST http://127.0.0.1:8080/token   → {"identity":"alice","token":"eyJ…"}
//
// The handler is safe for concurrent use.
package main
