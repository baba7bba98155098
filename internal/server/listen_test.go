//go:build unix

package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

// listenLoopback listens with Listen on a free loopback port until the
// test ends.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// acceptOne dials ln and returns both ends, closed when the test ends.
func acceptOne(t *testing.T, ln net.Listener) (client, accepted net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close() })
	return client, accepted
}

// TestListenNoKeepalive checks that connections accepted through Listen
// carry no TCP keepalive (Go's listener default turns it on with four
// setsockopt calls per accept), and that they still get TCP_NODELAY.
func TestListenNoKeepalive(t *testing.T) {
	ln := listenLoopback(t)
	_, c := acceptOne(t, ln)
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

// TestListenError checks that a listen failure says where it came from
// and keeps the network error it wraps.
func TestListenError(t *testing.T) {
	_, err := Listen(context.Background(), "127.0.0.1:-1")
	if err == nil {
		t.Fatal("Listen on port -1 succeeded")
	}
	var opErr *net.OpError
	if !strings.HasPrefix(err.Error(), "server: listen: ") || !errors.As(err, &opErr) {
		t.Errorf("Listen error %q (%T): want it prefixed \"server: listen: \" and wrapping a *net.OpError", err, err)
	}
}

// TestCapConnExposesSocket checks that a connection accepted under the
// connection caps still hands out its socket (syscall.Conn), which the
// gateway's writer pool needs, and that its Close still frees the slot.
func TestCapConnExposesSocket(t *testing.T) {
	s := newServer(t, Config{})
	ln := s.capped(listenLoopback(t), 1, 0)
	client, c := acceptOne(t, ln)
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T does not implement syscall.Conn", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var (
		sa    syscall.Sockaddr
		opErr error
	)
	if err := raw.Control(func(fd uintptr) { sa, opErr = syscall.Getpeername(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if opErr != nil {
		t.Fatal(opErr)
	}
	peer, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("peer address %T, want IPv4", sa)
	}
	if want := client.LocalAddr().(*net.TCPAddr).Port; peer.Port != want {
		t.Errorf("the socket's peer port is %d, want the client's %d", peer.Port, want)
	}
	c.Close()
	ln.mu.Lock()
	total := ln.total
	ln.mu.Unlock()
	if total != 0 {
		t.Errorf("%d slots held after Close, want 0", total)
	}
}
