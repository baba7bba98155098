package testrelay

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Relay is a TCP relay on loopback in front of a test server that can
// freeze (drop every byte both ways while the sockets stay open, like a
// network cut that neither side has noticed yet) or go away (refuse
// connections, like a dead server).
type Relay struct {
	Addr string // where clients connect: 127.0.0.1:port

	t       testing.TB
	target  string
	frozen  atomic.Bool
	stalled atomic.Bool

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

// New starts a relay on loopback to target (host:port); it is killed
// when the test ends.
func New(t testing.TB, target string) *Relay {
	t.Helper()
	p := &Relay{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.Kill()
		p.wg.Wait()
	})
	return p
}

func (p *Relay) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.handle(c) })
		}
	})
}

func (p *Relay) handle(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, s)
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(s, c) })
	wg.Go(func() { p.pipe(c, s) })
	wg.Wait()
}

// pipe copies src to dst, dropping what it reads while frozen and
// reading nothing while stalled.
func (p *Relay) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		for p.stalled.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		n, err := src.Read(buf)
		for n > 0 && p.stalled.Load() { // read before the Stall: held, not passed on
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Kill closes the listener and every connection: the server is gone.
// It ends a Stall, so that the relay's copies notice the closed
// connections and return.
func (p *Relay) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled.Store(false)
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Restart listens again on the same address, unfrozen and not stalled.
func (p *Relay) Restart() {
	p.t.Helper()
	p.frozen.Store(false)
	p.stalled.Store(false)
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("relay: listen again on %s: %v", p.Addr, err)
	}
	p.serve(ln)
}

// Freeze makes the relay drop every byte from now on, both ways, until
// Restart.
func (p *Relay) Freeze() { p.frozen.Store(true) }

// Stall makes the relay read nothing from now on, both ways, until Resume
// or Restart: a hung server (SIGSTOP), whose socket buffers fill until the
// peers' writes block.
func (p *Relay) Stall() { p.stalled.Store(true) }

// Resume ends a Stall.
func (p *Relay) Resume() { p.stalled.Store(false) }
