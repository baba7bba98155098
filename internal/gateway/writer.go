package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// writers is the gateway's shared pool of socket writers. A connection
// whose queue becomes ready is put on the ready list once (conn.sched);
// at most GOMAXPROCS writer goroutines drain the list, each writing a
// connection's whole queue with one non-blocking write. An event that
// reaches 5,000 connections thus wakes a few goroutines, not 5,000.
// Writers do not yield (runtime.Gosched) between connections: a yielded
// goroutine waits on the global run queue, which a busy processor serves
// once in 61 turns, and with one processor that starved the pool (rtbench
// channels -channels 1000 -subs-per-channel 1: delivery p50 3.6 s with a
// yield every 32 connections, 5.6 ms without). Connections with a reply or
// control frame ready are served first (the urgent list), so a write's
// reply does not wait behind the fan-out of its own event either.
//
// A write that the socket cannot take in full is finished by a goroutine
// of the connection's own (conn.writeRest) with a blocking write under
// WriteTimeout, so a slow client never holds a pool writer. Writers exit
// when the list is empty and are started again by the next push.
type writers struct {
	max       int           // writer goroutines at most
	lag, hold time.Duration // coalesceLag, coalesceHold

	rests atomic.Uint64 // writes the socket did not take at once (tests)
	// busySince is when the lists last became non-empty (monoNow); 0
	// while they are empty. behindUntil: see behind (coalesce.go).
	busySince   atomic.Int64
	behindUntil atomic.Int64
	holdGap     func(*conn) // tests (coalesce.go)

	mu      sync.Mutex
	urgent  fifo // connections with a reply or control frame ready
	ready   fifo // the others
	streak  int  // urgent pops in a row
	running int
}

// urgentStreak is how many urgent connections are served in a row before
// one of the others, so a flood of requests cannot starve event delivery.
const urgentStreak = 8

// fifo is a queue of connections.
type fifo struct {
	q    []*conn
	head int
}

func (f *fifo) push(c *conn) {
	if f.head > 1024 && f.head > len(f.q)/2 {
		// Under sustained load the queue may never empty: reuse its front.
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		f.q, f.head = f.q[:n], 0
	}
	f.q = append(f.q, c)
}

func (f *fifo) pop() *conn {
	if f.head == len(f.q) {
		if cap(f.q) > 4096 {
			f.q = nil // do not keep a burst's storage
		} else {
			f.q = f.q[:0]
		}
		f.head = 0
		return nil
	}
	c := f.q[f.head]
	f.q[f.head] = nil
	f.head++
	return c
}

// maxPoolBuffer bounds the write buffer a pool writer keeps between runs.
const maxPoolBuffer = 1 << 20

// maxPoolBatch bounds the frame slice a pool writer keeps between runs.
const maxPoolBatch = 4096

// writerScratch is a pool writer's reusable storage: the bytes it writes
// and the frames it drains. Pool writers come and go with the work, so it
// is kept in poolScratch between runs.
type writerScratch struct {
	buf   []byte
	batch []outFrame
}

var poolScratch = sync.Pool{New: func() any { return &writerScratch{buf: make([]byte, 0, writeBufferSize)} }}

func newWriters() *writers {
	return &writers{max: max(runtime.GOMAXPROCS(0), 1), lag: coalesceLag, hold: coalesceHold}
}

// push puts c on the ready list, ahead of the connections with only
// events to write when urgent; the caller set c.sched.
func (w *writers) push(c *conn, urgent bool) {
	w.mu.Lock()
	if urgent {
		w.urgent.push(c)
	} else {
		w.ready.push(c)
	}
	start := w.running < w.max
	if start {
		w.running++
	}
	if w.busySince.Load() == 0 {
		w.busySince.Store(monoNow())
	}
	w.mu.Unlock()
	if start {
		go w.run()
	}
}

// pop returns the next ready connection, or nil (and the caller exits)
// when there is none.
func (w *writers) pop() *conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	var c *conn
	if w.streak < urgentStreak {
		c = w.urgent.pop()
	}
	if c != nil {
		w.streak++
		return c
	}
	w.streak = 0
	if c = w.ready.pop(); c == nil {
		c = w.urgent.pop()
	}
	if c == nil {
		w.running--
		w.busySince.Store(0)
	}
	return c
}

func (w *writers) run() {
	sc := poolScratch.Get().(*writerScratch)
	for {
		c := w.pop()
		if c == nil {
			break
		}
		sc.buf, sc.batch = c.flush(sc.buf, sc.batch)
	}
	if cap(sc.buf) <= maxPoolBuffer && cap(sc.batch) <= maxPoolBatch {
		sc.buf = sc.buf[:0]
		poolScratch.Put(sc) // flush leaves batch empty and cleared
	}
}

// kick schedules c on the pool unless it is already scheduled (the
// sendQueue's notify function in pool mode). A reply is urgent: it goes
// ahead of the sessions woken only by events, so a write's reply does not
// wait behind the fan-out of its own event. An urgent kick, or any kick
// once the session has ended, also ends a hold (coalesce.go).
func (c *conn) kick(urgent bool) {
	if c.sched.CompareAndSwap(false, true) {
		c.g.writers.push(c, urgent)
		return
	}
	// deferred first: it is false but for held sessions, and this runs
	// for every event queued to a session already scheduled.
	if c.deferred.Load() && (urgent || c.ctx.Err() != nil) && c.deferred.CompareAndSwap(true, false) {
		c.g.writers.push(c, true)
	}
}

// unsched gives up c's place and takes it again if work arrived
// meanwhile (a producer that found c scheduled did not push it).
func (c *conn) unsched() {
	c.sched.Store(false)
	if c.ctx.Err() != nil || c.pong.Load() != nil || c.q.ready() {
		c.kick(false)
	}
}

// flush writes c's ready frames for a pool writer; the caller holds
// c.sched. When the session has ended it starts finish and keeps sched,
// so nothing else writes to the socket. buf and batch are the writer's
// scratch storage.
func (c *conn) flush(buf []byte, batch []outFrame) ([]byte, []outFrame) {
	if c.ctx.Err() != nil {
		go c.finish()
		return buf, batch
	}
	var now int64
	if c.g.cfg.CoalesceInterval > 0 {
		now = monoNow()
		if c.holdBack(now) {
			return buf, batch
		}
	}
	var overflow bool
	batch, overflow = c.q.drain(batch)
	if overflow {
		clear(batch)
		c.slow()
		go c.finish()
		return buf, batch[:0]
	}
	pong := c.pong.Swap(nil)
	if len(batch) == 0 && pong == nil {
		c.unsched()
		return buf, batch
	}
	buf = buf[:0]
	if pong != nil {
		buf = appendFrame(buf, ws.OpPong, *pong)
	}
	if now != 0 && hasFanout(batch) {
		c.lastFanout = now
	}
	if saved := eachWireFrame(batch, c.mergesEvents(), func(f []byte) {
		buf = appendFrame(buf, ws.OpBinary, f)
	}); saved > 0 {
		c.g.merged.Add(uint64(saved))
	}
	clear(batch)
	batch = batch[:0]
	n, err := c.writeNow(buf)
	switch {
	case err != nil:
		c.fail(fmt.Errorf("gateway: write: %w", err))
		go c.finish()
	case n < len(buf):
		c.g.writers.rests.Add(1)
		go c.writeRest(bytes.Clone(buf[n:])) // it reports the batch written
	default:
		c.q.wrote()
		c.unsched()
	}
	if cap(buf) > maxPoolBuffer {
		buf = make([]byte, 0, writeBufferSize)
	}
	return buf, batch
}

// writeNow writes as much of p as the socket takes without waiting.
func (c *conn) writeNow(p []byte) (int, error) {
	var (
		n    int
		werr error
	)
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, err := socketWrite(fd, p[n:])
			if m > 0 {
				n += m
			}
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return true // full: the rest is written by writeRest
			case err != nil:
				werr = err
				return true
			case m <= 0:
				werr = syscall.EIO
				return true
			}
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// writeRest finishes, on the connection's own goroutine, a write the
// socket could not take at once; it holds c.sched. The rest must be
// written within WriteTimeout or the client is a slow consumer.
func (c *conn) writeRest(p []byte) {
	c.nc.SetWriteDeadline(time.Now().Add(c.g.cfg.WriteTimeout))
	c.writing.Store(true)
	var err error
	if c.ctx.Err() == nil {
		_, err = c.nc.Write(p)
	}
	c.q.wrote()
	c.writing.Store(false)
	switch {
	case c.ctx.Err() != nil: // ended meanwhile, or cut short by fail
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.slow()
	case err != nil:
		c.fail(fmt.Errorf("gateway: write: %w", err))
	}
	if c.ctx.Err() != nil {
		c.finish()
		return
	}
	// Pool writes check the deadline too: clear it.
	c.nc.SetWriteDeadline(time.Time{})
	c.unsched()
}

// appendFrame appends an unmasked final frame.
func appendFrame(b []byte, op ws.OpCode, p []byte) []byte {
	n := len(p)
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		for s := 56; s >= 0; s -= 8 {
			b = append(b, byte(uint64(n)>>s))
		}
	}
	return append(b, p...)
}
