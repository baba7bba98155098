// Package web embeds the quickstart browser app that `chorus serve` serves
// at "/": a page that fetches a token from /token and talks to the server
// through the unmodified twilio-sync JS SDK.
//
// The embedded files are read-only; FS is safe for concurrent use.
package web
