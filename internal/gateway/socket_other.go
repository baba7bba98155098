//go:build !unix

package gateway

import "syscall"

// rawConn returns nil where the gateway has no non-blocking write of its
// own (Windows, whose sockets are overlapped): every session then writes
// through net.Conn on its own goroutine (writeLoop), as TLS sessions do.
// Correct, and slower, on platforms the project does not claim.
func rawConn(any) syscall.RawConn { return nil }

// socketWrite is not reached here (rawConn returns nil); it reports a full
// socket, which would send the frame the writeRest way.
func socketWrite(uintptr, []byte) (int, error) { return 0, syscall.EAGAIN }
