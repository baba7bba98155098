//go:build unix

package main

import "syscall"

// openFilesLimit is the process's limit on open files (the soft limit,
// which the Go runtime raised to the hard one at start), or 0 if unknown.
func openFilesLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}
