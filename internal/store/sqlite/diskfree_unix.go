//go:build unix

package sqlite

import "golang.org/x/sys/unix"

// freeBytes is the space an unprivileged process may still use on the
// file system holding dir; ok is false when it cannot be read.
func freeBytes(dir string) (free uint64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}
