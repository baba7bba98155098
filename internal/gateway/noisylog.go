package gateway

import (
	"context"
	"log/slog"
	"time"

	"github.com/chorus-sync/chorus/internal/ratelog"
)

// noisyLog bounds the log lines that a client can cause at will, before
// it authenticates or without ever doing so: a rejected init, a text or
// malformed frame. A flood of them would otherwise write a line each
// (28,000 lines in 10 s from 40 connections in a test) and fill the disk.
// It lets through noisyBurst lines, then noisyRate a second; the next line
// let through says how many were left out. Safe for concurrent use.
type noisyLog struct{ gate *ratelog.Gate }

const (
	noisyRate  = 10
	noisyBurst = 20
)

func newNoisyLog() *noisyLog {
	return &noisyLog{ratelog.New(time.Second/noisyRate, noisyBurst)}
}

// log writes msg at level to l, unless over the rate.
func (n *noisyLog) log(l *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	held, ok := n.gate.Allow()
	if !ok {
		return
	}
	if held > 0 {
		attrs = append(attrs, slog.Uint64("suppressed", held))
	}
	l.LogAttrs(context.Background(), level, msg, attrs...)
}
