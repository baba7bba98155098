// Package server wires one Chorus node: the SQLite store, the in-process
// bus, the engine and the HTTP surface (REST v1 at /v1/, the Twilsock
// gateway at /v3/wsconnect, the quickstart's /token endpoint and its static
// files at /, /healthz) on one listener.
//
// New opens everything, Run serves until its context is done and then shuts
// down in order (HTTP, gateway, engine, bus, store). A Server's Handler is
// safe for concurrent use; Run must be called at most once.
package server
