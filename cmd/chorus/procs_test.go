package main

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
)

func TestRaiseProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	env := map[string]string{}
	old := getenv
	getenv = func(k string) string { return env[k] }
	t.Cleanup(func() { getenv = old })

	runtime.GOMAXPROCS(1)
	raiseProcs(logger)
	if n := runtime.GOMAXPROCS(0); n != minServeProcs {
		t.Errorf("one processor raised to %d, want %d", n, minServeProcs)
	}
	runtime.GOMAXPROCS(4)
	raiseProcs(logger)
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Errorf("four processors changed to %d", n)
	}
	env["GOMAXPROCS"] = "1"
	runtime.GOMAXPROCS(1)
	raiseProcs(logger)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS=1 set by the operator changed to %d", n)
	}
}
