package sqlite

import (
	"errors"
	"fmt"
	"os"
)

// ErrLocked is LockFile's error when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// LockFile takes an exclusive lock on the file at path (created if
// missing, mode 0600) without waiting, for the commands that must not run
// twice on one data directory at once (chorus serve, a copy into it). The
// lock is the operating system's: it goes when unlock is called or the
// process ends, however it ends. The file stays. An error wraps ErrLocked
// when another process holds the lock.
func LockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lock %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("sqlite: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// LockDir takes an exclusive lock on the directory dir itself without
// waiting, where the system allows it (Unix), for a process that must be
// the only one of its kind on the directory: unlike a lock file, which an
// operator may delete (and the next process then lock a new file of the
// same name), the directory cannot be deleted while it holds a database
// (moved, it takes its lock along). Where
// open files cannot be deleted (Windows) a lock file suffices, and LockDir
// does nothing. An error wraps ErrLocked when another process holds the
// lock.
func LockDir(dir string) (unlock func(), err error) {
	unlock, err = lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lock directory %s: %w", dir, err)
	}
	return unlock, nil
}
