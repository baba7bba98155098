//go:build !unix

package gateway

import "syscall"

// socketWrite writes nothing where the gateway has no non-blocking write
// of its own (Windows, whose sockets are overlapped): the caller then
// writes the frame through net.Conn on the connection's goroutine
// (writeRest), as after a full socket buffer. Correct, and slower.
func socketWrite(uintptr, []byte) (int, error) { return 0, syscall.EAGAIN }
