package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// scratch holds the paths of what backup, restore and the snapshot reader
// stage on disk: whole copies of a database, secrets included. A second
// signal ends the process without running its deferred calls, so its
// handler removes these first (forcedExit). The next run would remove them
// too, but only after an hour, and only if one runs.
//
// Concurrency: every method may be called from any goroutine. The lock is
// held while the handler removes the paths, and while settle moves one, so
// that a staging directory is never removed half-way through its rename to
// its final name (RemoveAll would then go on inside the renamed directory).
var scratch scratchPaths

type scratchPaths struct {
	mu    sync.Mutex
	paths map[string]struct{}
	ended bool // forcedExit ran: a path added now is removed at once
}

// add registers path and returns the function that forgets it, to be
// called once the path is removed or has its final name.
func (s *scratchPaths) add(path string) (forget func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended { // the process is ending: no copy is left behind
		_ = os.RemoveAll(path)
		return func() {}
	}
	if s.paths == nil {
		s.paths = make(map[string]struct{})
	}
	s.paths[path] = struct{}{}
	return func() { s.forget(path) }
}

func (s *scratchPaths) forget(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.paths, path)
}

// settle runs move, which gives path its final name, and forgets path
// once it succeeded, with forcedExit kept out meanwhile.
func (s *scratchPaths) settle(path string, move func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		select {} // the process is ending; the handler removed path
	}
	if err := move(); err != nil {
		return err
	}
	delete(s.paths, path)
	return nil
}

// removeAll removes every registered path and lets nothing else settle.
func (s *scratchPaths) removeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	for p := range s.paths {
		_ = os.RemoveAll(p)
	}
	s.paths = nil
}

// forcedExit waits for the signal after the first (which started a
// graceful stop), removes the scratch copies, and ends the process by that
// signal's default action, as if it had not been caught. What was
// acknowledged is durable: it survives kill -9 too.
func forcedExit(again <-chan os.Signal) {
	sig := <-again
	signal.Reset() // a third signal ends the process even during the removal
	scratch.removeAll()
	if self, err := os.FindProcess(os.Getpid()); err == nil && self.Signal(sig) == nil {
		time.Sleep(time.Second) // the signal is delivered to some thread meanwhile
	}
	if s, ok := sig.(syscall.Signal); ok {
		os.Exit(128 + int(s)) // the shell's code for "killed by s"
	}
	os.Exit(exitError)
}
