//go:build linux && (amd64 || arm64)

package sqlite

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// WAL write coalescing.
//
// SQLite appends a transaction's WAL frames with two pwrite(2) calls each
// (the 24-byte frame header, then the page), so a batch that dirties 30
// pages makes 60 system calls. On the VMs this runs on a system call is
// expensive: 60 pwrites of a 30-frame commit take ~146 µs, one write of
// the same bytes ~22 µs (measured here, page cache only). The unix VFS lets
// an application replace its system calls (sqlite3_vfs.xSetSystemCall);
// this file replaces pwrite so that consecutive appends to a -wal file
// are gathered in memory and written with one pwrite when the commit
// frame's page arrives. SQLite sees every write succeed or fail as before.
//
// What SQLite may observe of the file is kept exact: the buffer is
// written out before any other operation on that descriptor (a
// non-contiguous write, pread, fstat, ftruncate, close) and when it grows
// past walBufferMax. A commit's frames are therefore all in the file
// before its COMMIT returns, so before the wal-index publishes them to
// readers and before the syncer's fdatasync; frames still buffered belong
// to a transaction that has not committed, which a crash would discard
// anyway. Only a transaction that spills pages to the WAL before its
// commit leaves frames buffered across calls; a read of them (pread)
// writes them out first. If that transaction rolls back instead, its
// frames are garbage: they are dropped when the WAL write lock is released
// (fcntl on the -shm file), never written after it, when another process
// may have committed frames at the same offsets.

// walBufferMax bounds the bytes held for one descriptor.
const walBufferMax = 4 << 20

// walFrameHeader is the size of a WAL frame header; bytes 4-7 hold the
// database size after a commit frame, zero otherwise.
const walFrameHeader = 24

// walBuffer is a descriptor's state. wal, shm and db are set once; the
// other fields belong to the connection using the descriptor (and to
// dropPending, which runs while that connection holds the write lock).
type walBuffer struct {
	wal      bool   // a -wal file: its appends are buffered
	shm      bool   // a -shm file: its locks are watched
	db       string // a -wal or -shm file's database path
	end      int64  // end of the frames appended so far (written or pending)
	start    int64  // file offset of buf[0]
	buf      []byte // pending bytes, contiguous from start to end
	wantPage bool   // buf ends with a frame header: its page comes next
	commit   bool   // that header is a commit frame's
}

type (
	fnClose     = func(*libc.TLS, int32) int32
	fnFcntl     = func(*libc.TLS, int32, int32, uintptr) int32
	fnFstat     = func(*libc.TLS, int32, uintptr) int32
	fnFtruncate = func(*libc.TLS, int32, int64) int32
	fnPread     = func(*libc.TLS, int32, uintptr, uint64, int64) int64
	fnPwrite    = func(*libc.TLS, int32, uintptr, uint64, int64) int64
)

// walWrites is the state of the replaced system calls. SQLite uses a
// descriptor from one connection at a time, but connections run on many
// goroutines, so the map is guarded by mu; a buffer is touched only by
// the connection that owns its descriptor.
var walWrites struct {
	mu  sync.RWMutex
	fds map[int32]*walBuffer // descriptors seen, until SQLite closes them

	gathered, flushes, dropped atomic.Int64 // WAL writes buffered; buffers written; dropped (tests)

	close     fnClose
	fcntl     fnFcntl
	fstat     fnFstat
	ftruncate fnFtruncate
	pread     fnPread
	pwrite    fnPwrite
}

// installWALWrites replaces the unix VFS's pwrite, pread, fstat,
// ftruncate, close and fcntl. It runs from init, before any connection
// opens (xSetSystemCall is not thread-safe). Each WAL descriptor that
// writes keeps its buffer's storage, at most about walBufferMax.
func installWALWrites() error {
	walWrites.fds = make(map[int32]*walBuffer)
	tls := libc.NewTLS()
	defer tls.Close()
	pVfs := sqlite3.Xsqlite3_vfs_find(tls, 0)
	if pVfs == 0 {
		return fmt.Errorf("no default VFS")
	}
	vfs := (*sqlite3.Tsqlite3_vfs)(cmem(pVfs))
	if vfs.FiVersion < 3 || vfs.FxGetSystemCall == 0 || vfs.FxSetSystemCall == 0 {
		return fmt.Errorf("VFS has no system call table")
	}
	get := *(*func(*libc.TLS, uintptr, uintptr) uintptr)(unsafe.Pointer(&vfs.FxGetSystemCall))
	set := *(*func(*libc.TLS, uintptr, uintptr, uintptr) int32)(unsafe.Pointer(&vfs.FxSetSystemCall))
	swap := func(name string, old, repl unsafe.Pointer) error {
		z, err := libc.CString(name)
		if err != nil {
			return err
		}
		defer libc.Xfree(tls, z)
		cur := get(tls, pVfs, z)
		if cur == 0 {
			return fmt.Errorf("no system call %q", name)
		}
		*(*uintptr)(old) = cur
		if rc := set(tls, pVfs, z, *(*uintptr)(repl)); rc != sqlite3.SQLITE_OK {
			return fmt.Errorf("set system call %q: %d", name, rc)
		}
		return nil
	}
	var (
		close     fnClose     = walClose
		fcntl     fnFcntl     = walFcntl
		fstat     fnFstat     = walFstat
		ftruncate fnFtruncate = walFtruncate
		pread     fnPread     = walPread
		pwrite    fnPwrite    = walPwrite
	)
	for _, s := range []struct {
		name      string
		old, repl unsafe.Pointer
	}{
		{"close", unsafe.Pointer(&walWrites.close), unsafe.Pointer(&close)},
		{"fcntl", unsafe.Pointer(&walWrites.fcntl), unsafe.Pointer(&fcntl)},
		{"fstat", unsafe.Pointer(&walWrites.fstat), unsafe.Pointer(&fstat)},
		{"ftruncate", unsafe.Pointer(&walWrites.ftruncate), unsafe.Pointer(&ftruncate)},
		{"pread", unsafe.Pointer(&walWrites.pread), unsafe.Pointer(&pread)},
		{"pwrite", unsafe.Pointer(&walWrites.pwrite), unsafe.Pointer(&pwrite)},
	} {
		if err := swap(s.name, s.old, s.repl); err != nil {
			return err
		}
	}
	return nil
}

func init() {
	if err := installWALWrites(); err != nil {
		// SQLite keeps its own system calls: correct, only slower.
		slog.Warn("sqlite: WAL writes are not gathered", "err", err)
	}
}

// cmem turns an address in SQLite's C memory (modernc.org/libc's heap,
// outside Go's) into a pointer.
func cmem(addr uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&addr)) }

// fdState returns fd's state, looking the descriptor up once. A lookup
// that fails is not remembered (the descriptor is treated as an ordinary
// file this time), so a -shm file is never taken for one for good.
func fdState(fd int32) *walBuffer {
	walWrites.mu.RLock()
	b, ok := walWrites.fds[fd]
	walWrites.mu.RUnlock()
	if ok {
		return b
	}
	b = &walBuffer{}
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(fd)))
	if err != nil {
		return b
	}
	if db, ok := strings.CutSuffix(target, "-wal"); ok {
		b.wal, b.db = true, db
	} else if db, ok := strings.CutSuffix(target, "-shm"); ok {
		b.shm, b.db = true, db
	}
	walWrites.mu.Lock()
	walWrites.fds[fd] = b
	walWrites.mu.Unlock()
	return b
}

// walFD returns fd's state if it is open on a -wal file, else nil.
func walFD(fd int32) *walBuffer {
	if b := fdState(fd); b.wal {
		return b
	}
	return nil
}

// walWriteLockByte is the -shm byte whose lock is the WAL write lock
// (UNIX_SHM_BASE + WAL_WRITE_LOCK).
const walWriteLockByte = 120

// walFcntl drops what a WAL holds pending when the WAL write lock is
// released. A commit has written everything by then, so pending bytes are
// frames of a transaction that rolled back after spilling pages: garbage,
// which must never be written after the lock is gone, when another
// process may commit frames at the same offsets. Every end of a write
// transaction unlocks the byte with a system call, except under
// locking_mode=EXCLUSIVE, where SQLite keeps the lock (and no other
// process can write); the store never sets that mode.
func walFcntl(tls *libc.TLS, fd, cmd int32, va uintptr) int32 {
	if cmd == syscall.F_SETLK {
		if st := fdState(fd); st.shm {
			ap := va
			lk := (*sqlite3.Tflock)(cmem(libc.VaUintptr(&ap)))
			if lk.Fl_type == syscall.F_UNLCK && lk.Fl_start <= walWriteLockByte &&
				(lk.Fl_len == 0 || walWriteLockByte < lk.Fl_start+lk.Fl_len) {
				dropPending(st.db)
			}
		}
	}
	return walWrites.fcntl(tls, fd, cmd, va)
}

// dropPending forgets the pending bytes of db's WAL descriptors. Only the
// connection that held the write lock can have any: no other writes
// frames meanwhile, so the others' state is only read.
func dropPending(db string) {
	walWrites.mu.RLock()
	defer walWrites.mu.RUnlock()
	for _, b := range walWrites.fds {
		if b.wal && b.db == db && (len(b.buf) > 0 || b.wantPage) {
			walWrites.dropped.Add(1)
			b.end = b.start
			b.buf, b.wantPage, b.commit = b.buf[:0], false, false
		}
	}
}

// flushWAL writes fd's pending bytes; on failure it sets errno and
// returns false, and the bytes are dropped (SQLite fails the operation
// that needed them, and rewrites frames from the offset it still holds).
func flushWAL(tls *libc.TLS, fd int32, b *walBuffer) bool {
	if b == nil || len(b.buf) == 0 {
		return true
	}
	walWrites.flushes.Add(1)
	p, off := b.buf, b.start
	b.buf, b.commit, b.wantPage = b.buf[:0], false, false
	for len(p) > 0 {
		n, err := syscall.Pwrite(int(fd), p, off)
		if err == syscall.EINTR {
			continue
		}
		if err == nil && n == 0 {
			err = syscall.EIO
		}
		if err != nil {
			*(*int32)(cmem(libc.X__errno_location(tls))) = int32(err.(syscall.Errno))
			return false
		}
		p, off = p[n:], off+int64(n)
	}
	return true
}

// writeFault, when set (tests only), makes pwrite(2) fail with EIO on the
// descriptors it reports, other than -wal and -shm files': a disk that
// fails under a checkpoint.
var writeFault atomic.Pointer[func(fd int32) bool]

// walPwrite gathers the frames SQLite appends to a WAL (a 24-byte header
// at the end of what was written, then its page) and writes them once the
// commit frame's page arrives. Every other write goes to the file at once,
// after what is pending: the WAL header (offset 0, after a reset), and the
// in-place rewrites of a frame's page or header (below the end) that
// SQLite makes when a transaction writes a page twice; it rewrites headers
// after the commit frame, so they must not wait for a page that never
// follows. Only the bytes pending must be contiguous and go first; the end
// is a guess of where the next append lands, and a wrong guess costs only
// a write that is not gathered.
func walPwrite(tls *libc.TLS, fd int32, buf uintptr, n uint64, off int64) int64 {
	b := walFD(fd)
	if b == nil {
		if f := writeFault.Load(); f != nil && (*f)(fd) {
			*(*int32)(cmem(libc.X__errno_location(tls))) = int32(syscall.EIO)
			return -1
		}
		return walWrites.pwrite(tls, fd, buf, n, off)
	}
	appending := off == b.end
	switch {
	case appending && !b.wantPage && n == walFrameHeader,
		appending && b.wantPage && n != walFrameHeader && n <= walBufferMax:
		if len(b.buf) == 0 {
			b.start = off
		}
		p := unsafe.Slice((*byte)(cmem(buf)), n)
		b.buf = append(b.buf, p...)
		b.end = off + int64(n)
		walWrites.gathered.Add(1)
		if !b.wantPage {
			b.wantPage = true
			b.commit = p[4]|p[5]|p[6]|p[7] != 0
			return int64(n)
		}
		b.wantPage = false
		if (b.commit || len(b.buf) >= walBufferMax) && !flushWAL(tls, fd, b) {
			return -1
		}
		return int64(n)
	}
	if !flushWAL(tls, fd, b) {
		return -1
	}
	b.wantPage = false
	// The end follows the last write, so after an in-place rewrite the next
	// append is written through and the end found again.
	b.end = off + int64(n)
	return walWrites.pwrite(tls, fd, buf, n, off)
}

func walPread(tls *libc.TLS, fd int32, buf uintptr, n uint64, off int64) int64 {
	if b := walFD(fd); b != nil && !flushWAL(tls, fd, b) {
		return -1
	}
	return walWrites.pread(tls, fd, buf, n, off)
}

func walFstat(tls *libc.TLS, fd int32, st uintptr) int32 {
	if b := walFD(fd); b != nil && !flushWAL(tls, fd, b) {
		return -1
	}
	return walWrites.fstat(tls, fd, st)
}

func walFtruncate(tls *libc.TLS, fd int32, size int64) int32 {
	if b := walFD(fd); b != nil && !flushWAL(tls, fd, b) {
		return -1
	}
	return walWrites.ftruncate(tls, fd, size)
}

// walClose writes what is pending and forgets the descriptor, whose
// number the kernel may give to another file.
func walClose(tls *libc.TLS, fd int32) int32 {
	walWrites.mu.Lock()
	b := walWrites.fds[fd]
	delete(walWrites.fds, fd)
	walWrites.mu.Unlock()
	ok := b == nil || !b.wal || flushWAL(tls, fd, b)
	rc := walWrites.close(tls, fd)
	if !ok {
		return -1
	}
	return rc
}
