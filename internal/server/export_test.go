package server

// For the tests of package server_test (which may import servertest).
var (
	NewWhenUp  = newWhenUp
	CheckReady = checkReady
	NewRefused = newRefused
)
