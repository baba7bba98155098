package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// noisyLog bounds the log lines that a client can cause at will, before
// it authenticates or without ever doing so: a rejected init, a text or
// malformed frame. A flood of them would otherwise write a line each
// (28,000 lines in 10 s from 40 connections in a test) and fill the disk.
// It lets through noisyBurst lines, then noisyRate a second; the next line
// let through says how many were left out. Safe for concurrent use.
type noisyLog struct {
	lim     *rate.Limiter
	skipped atomic.Uint64
}

const (
	noisyRate  = 10
	noisyBurst = 20
)

func newNoisyLog() *noisyLog { return &noisyLog{lim: rate.NewLimiter(noisyRate, noisyBurst)} }

// log writes msg at level to l, unless over the rate.
func (n *noisyLog) log(l *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	if !n.lim.Allow() {
		n.skipped.Add(1)
		return
	}
	if s := n.skipped.Swap(0); s > 0 {
		attrs = append(attrs, slog.Uint64("suppressed", s))
	}
	l.LogAttrs(context.Background(), level, msg, attrs...)
}
