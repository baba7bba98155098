//go:build !unix

package sqlite

// freeBytes: unknown on this platform.
func freeBytes(string) (uint64, bool) { return 0, false }
