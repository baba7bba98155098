package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/server"
)

// benchServer runs an in-process server on 127.0.0.1 and returns its URL,
// data directory and the server.
func benchServer(tb testing.TB) (string, string, *server.Server) {
	tb.Helper()
	dir := tb.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	// The cap chorus serve applies by default: bench dials within it.
	srv, err := server.New(ctx, server.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WSMaxUnauthPerAddr: defaultWSMaxUnauthPerIP})
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		srv.Close()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server.Run: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), dir, srv
}

var (
	benchDeliveriesRE = regexp.MustCompile(`(?m)^deliveries: (\d+), [\d.]+/s$`)
	benchWritesRE     = regexp.MustCompile(`(?m)^writes: (\d+) ok, (\d+) errors, [\d.]+/s`)
	benchLatencyRE    = regexp.MustCompile(`(?m)^latency: p50 [\d.]+ms p90 [\d.]+ms p99 [\d.]+ms max [\d.]+ms$`)
	benchIntegrityRE  = regexp.MustCompile(`(?m)^missed: (\d+) duplicated: (\d+) out-of-order: (\d+)$`)
)

func TestBench(t *testing.T) {
	url, dir, srv := benchServer(t)
	// A run leaves no documents behind in the service it measured.
	t.Cleanup(func() {
		c := srv.Credentials()
		req := httptest.NewRequest("GET", "/v1/Services/"+c.ServiceSID+"/Documents?PageSize=100", nil)
		req.SetBasicAuth(c.AccountSID, c.AuthToken)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 || strings.Contains(rec.Body.String(), `"unique_name":"bench-`) {
			t.Errorf("after the runs, the service's documents: %d %s; want none of the runs'", rec.Code, rec.Body)
		}
	})
	for _, tc := range []struct {
		name  string
		conns int
		args  []string
	}{
		{"client writers", 50, []string{"--writers", "2", "--rate", "40/s"}},
		{"rest writers", 20, []string{"--writers", "2", "--rate", "20/s", "--docs", "2", "--via", "rest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"bench", "--url", url, "--data-dir", dir, "--conns", strconv.Itoa(tc.conns),
				"--duration", "2s", "--settle", "10s"}, tc.args...)
			if code := run(ctx, args, &stdout, &stderr); code != exitOK {
				t.Fatalf("run(%q) = %d, want 0; stderr: %s; stdout: %s", args, code, stderr.String(), stdout.String())
			}
			out := stdout.String()
			t.Logf("%s", out)
			w := benchWritesRE.FindStringSubmatch(out)
			d := benchDeliveriesRE.FindStringSubmatch(out)
			in := benchIntegrityRE.FindStringSubmatch(out)
			if w == nil || d == nil || in == nil || !benchLatencyRE.MatchString(out) {
				t.Fatalf("output lacks the writes, deliveries, latency or integrity line:\n%s", out)
			}
			writes, _ := strconv.Atoi(w[1])
			deliveries, _ := strconv.Atoi(d[1])
			if writes == 0 {
				t.Errorf("writes = 0, want > 0")
			}
			// Every subscriber gets every acknowledged write, once.
			if want := writes * tc.conns; deliveries != want {
				t.Errorf("deliveries = %d, want writes×conns = %d", deliveries, want)
			}
			if in[1] != "0" || in[2] != "0" || in[3] != "0" {
				t.Errorf("missed/duplicated/out-of-order = %s/%s/%s, want 0/0/0", in[1], in[2], in[3])
			}
		})
	}
}

func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad rate", []string{"--rate", "fast"}, "invalid --rate"},
		// NaN passed the range check and a tiny rate overflowed the
		// writers' interval: both panicked in time.NewTicker.
		{"NaN rate", []string{"--rate", "NaN"}, "invalid --rate"},
		{"tiny rate", []string{"--rate", "1e-300/s"}, "invalid --rate"},
		{"infinite rate", []string{"--rate", "Inf"}, "invalid --rate"},
		{"zero conns", []string{"--conns", "0"}, "invalid --conns"},
		{"too many conns", []string{"--conns", "1000000"}, "invalid --conns"},
		{"bad url", []string{"--url", "ftp://x"}, "invalid --url"},
		{"long duration", []string{"--duration", "2h"}, "invalid --duration"},
		{"bad via", []string{"--via", "carrier-pigeon"}, "invalid --via"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"bench"}, tc.args...), &stdout, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("run(bench %q) = %d, %q; want %d and %q", tc.args, code, stderr.String(), exitUsage, tc.want)
			}
		})
	}
}

// A run stopped by Ctrl-C says so and fails: it used to print a
// normal-looking result and exit 0.
func TestBenchInterrupted(t *testing.T) {
	url, dir, _ := benchServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr logtest.Buffer // read while run writes
	args := []string{"bench", "--url", url, "--data-dir", dir, "--conns", "5", "--writers", "1", "--rate", "20/s",
		"--duration", "1m", "--settle", "2s"}
	go func() {
		for !strings.Contains(stdout.String(), "writing for") {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		cancel() // as the signal handler does
	}()
	start := time.Now()
	code := run(ctx, args, &stdout, &stderr)
	if code == exitOK || !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stdout.String(), "interrupted after") {
		t.Errorf("an interrupted run = %d; stderr %q; stdout %q; want a failure that says it was interrupted", code, stderr.String(), stdout.String())
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the interrupted run took %v", took)
	}
}

// TestBenchServerGone: a server that goes away during the writing phase
// ends the run soon after the phase, with its writes counted as errors;
// a run went on for minutes while the client retried.
func TestBenchServerGone(t *testing.T) {
	shortBenchWaits(t)
	dir := t.TempDir()
	srv, err := server.New(context.Background(), server.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WSMaxUnauthPerAddr: defaultWSMaxUnauthPerIP})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	served := make(chan error, 1)
	go func() { served <- srv.Run(sctx, ln) }()

	var stdout, stderr logtest.Buffer
	args := []string{"bench", "--url", "http://" + ln.Addr().String(), "--data-dir", dir, "--conns", "3", "--writers", "2",
		"--rate", "50/s", "--duration", "3s", "--settle", "1s"}
	go func() {
		for !strings.Contains(stdout.String(), "writing for") {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		stopServer()
	}()
	start := time.Now()
	code := run(context.Background(), args, &stdout, &stderr)
	took := time.Since(start)
	<-served
	if took > 3*time.Second+benchWriteGrace+benchSetupWait+5*time.Second {
		t.Errorf("a run whose server went away took %v", took)
	}
	m := benchWritesRE.FindStringSubmatch(stdout.String())
	if code == exitOK || m == nil || m[2] == "0" || !strings.Contains(stderr.String(), "writes failed") {
		t.Errorf("a run whose server went away = %d; stdout %q stderr %q; want a failure with its write errors", code, stdout.String(), stderr.String())
	}
}

// TestBenchNoServer: nothing listens at --url: the run fails within the
// setup's wait, saying where it could not connect.
func TestBenchNoServer(t *testing.T) {
	shortBenchWaits(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	_, dir, _ := benchServer(t) // for its stored credentials
	var stdout, stderr logtest.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"bench", "--url", url, "--data-dir", dir, "--duration", "1s"}, &stdout, &stderr)
	if took := time.Since(start); code == exitOK || took > benchSetupWait+5*time.Second || !strings.Contains(stderr.String(), url) {
		t.Errorf("bench against a closed port: exit %d after %v, stderr %q; want a failure naming %s within %v", code, took, stderr.String(), url, benchSetupWait)
	}
}

// shortBenchWaits shortens benchSetupWait and benchWriteGrace until the
// test ends.
func shortBenchWaits(t *testing.T) {
	setup, grace := benchSetupWait, benchWriteGrace
	benchSetupWait, benchWriteGrace = 3*time.Second, 2*time.Second
	t.Cleanup(func() { benchSetupWait, benchWriteGrace = setup, grace })
}
