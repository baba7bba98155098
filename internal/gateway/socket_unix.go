//go:build unix

package gateway

import "syscall"

// socketWrite is write(2) on the connection's non-blocking socket: it
// returns EAGAIN when the socket's buffer is full.
func socketWrite(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
