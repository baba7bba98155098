//go:build !linux

package sqlite

import "os"

// datasync flushes f to stable storage (on Darwin, os.File.Sync uses
// F_FULLFSYNC).
func datasync(f *os.File) error { return f.Sync() }
