// Package testrelay is a TCP relay for tests of network faults: put it
// between a client and a test server, then freeze it (a network cut that
// neither side has noticed yet), stall it (a hung server, whose socket
// buffers fill), kill it (a dead server) or restart it.
// Its methods are safe for concurrent use.
package testrelay
