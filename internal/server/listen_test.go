//go:build unix

package server

import (
	"context"
	"net"
	"syscall"
	"testing"
)

// TestListenNoKeepalive checks that connections accepted through Listen
// carry no TCP keepalive (Go's listener default turns it on with four
// setsockopt calls per accept), and that they still get TCP_NODELAY.
func TestListenNoKeepalive(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var keepalive, nodelay int
	var opErr error
	if err := raw.Control(func(fd uintptr) {
		if keepalive, opErr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); opErr != nil {
			return
		}
		nodelay, opErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
	}); err != nil {
		t.Fatal(err)
	}
	if opErr != nil {
		t.Fatal(opErr)
	}
	if keepalive != 0 {
		t.Errorf("SO_KEEPALIVE = %d on an accepted connection, want 0", keepalive)
	}
	if nodelay == 0 {
		t.Error("TCP_NODELAY is off on an accepted connection, want on")
	}
}

// TestListenError checks that a listen failure names its cause.
func TestListenError(t *testing.T) {
	if _, err := Listen(context.Background(), "127.0.0.1:-1"); err == nil {
		t.Fatal("Listen on port -1 succeeded")
	}
}
