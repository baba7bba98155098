// Package token mints and verifies Twilio-compatible Access Tokens for Sync:
// compact HS256 JWTs with the header cty "twilio-fpa;v=1", signed with an API
// key secret, whose grants carry the user's identity and a data_sync grant.
//
// Tokens minted by Mint are accepted by Twilio's client SDKs and decode with
// the official helper libraries; a Verifier accepts the tokens that twilio-node,
// twilio-go and twilio-python mint, and reports every rejection as a
// *chorus.Error with the Twilio code of the reason (20101-20160).
//
// Mint is a pure function. A Verifier is safe for concurrent use as long as
// its fields are not changed after first use; its Keys function is called
// concurrently.
package token
