//go:build unix

package gateway

import "syscall"

// rawConn returns the socket's raw connection when writes can go through
// the pool (a plain TCP or Unix socket), else nil.
func rawConn(nc any) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// socketWrite is write(2) on the connection's non-blocking socket: it
// returns EAGAIN when the socket's buffer is full.
func socketWrite(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
