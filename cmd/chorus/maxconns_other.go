//go:build !unix

package main

// openFilesLimit: unknown on this platform.
func openFilesLimit() uint64 { return 0 }
