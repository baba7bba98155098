package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/client"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/token"
)

// benchDocTTL is the expiry of a run's documents, which it removes when it
// ends: a run killed before that leaves them for a day at most.
const benchDocTTL = 24 * time.Hour

// benchSetupWait bounds the setup client's connect, and each document's
// creation and removal; benchWriteGrace is how long after the writing
// phase a write still in flight may take. Variables for
// the tests, which shorten them.
var (
	benchSetupWait  = 15 * time.Second
	benchWriteGrace = 10 * time.Second
)

// Bounds of `chorus bench`: it only ever talks to the URLs it is given.
const (
	benchMaxConns    = 20000
	benchMaxDocs     = 1000
	benchMaxWriters  = 256
	benchMinRate     = 0.01  // writes/s, all writers together
	benchMaxRate     = 20000 // writes/s, all writers together
	benchMaxDuration = 10 * time.Minute
)

// benchConfig is a parsed `chorus bench` command line.
type benchConfig struct {
	urls       []string
	conns      int
	docs       int
	writers    int
	rate       float64 // writes/s, all writers together
	duration   time.Duration
	settle     time.Duration // how long deliveries may trail the last write
	via        string        // "client" (Twilsock) or "rest" (REST v1)
	dialers    int           // connections opened in parallel
	creds      engine.Credentials
	logger     *slog.Logger
	httpClient *http.Client
}

// benchResult is what a run measured.
type benchResult struct {
	conns       int
	connectTime time.Duration
	elapsed     time.Duration // writing phase
	writes      int64
	writeErrors int64
	deliveries  int64
	missed      int64 // events never delivered, trailing included
	trailing    int64 // of missed, those after a subscriber's last delivery: still in flight when --settle ended, or lost
	duplicates  int64
	outOfOrder  int64
	latencies   []time.Duration // sorted
	interrupted bool            // the run was stopped (Ctrl-C) before its end
}

func (r *benchResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies)-1) * p)
	return r.latencies[i]
}

// benchPayload is the data every benchmark write carries.
type benchPayload struct {
	Writer int   `json:"w"`
	Seq    int64 `json:"s"`
	Nanos  int64 `json:"t"` // time.Now().UnixNano() at the writer
}

// subscriber is one measured connection; its fields are written only by
// its client's dispatcher goroutine and read after the client closed.
type subscriber struct {
	c         *client.Client
	last      []int64 // per doc: last event id
	lastSeq   []map[int]int64
	latencies []time.Duration
	count     atomic.Int64
	missed    int64
	dups      int64
	ooo       int64
}

func (s *subscriber) onEvent(doc int, ev client.Event) {
	now := time.Now()
	if ev.Type != "document_updated" {
		return
	}
	switch {
	case ev.ID <= s.last[doc]:
		s.dups++ // the client should never deliver this
		return
	case ev.ID > s.last[doc]+1:
		s.missed += ev.ID - s.last[doc] - 1
	}
	s.last[doc] = ev.ID
	var p benchPayload
	if err := json.Unmarshal(ev.Data, &p); err != nil || p.Nanos == 0 {
		return
	}
	if prev, ok := s.lastSeq[doc][p.Writer]; ok {
		switch {
		case p.Seq == prev:
			s.dups++
		case p.Seq < prev:
			s.ooo++
		}
	}
	s.lastSeq[doc][p.Writer] = p.Seq
	s.latencies = append(s.latencies, now.Sub(time.Unix(0, p.Nanos)))
	s.count.Add(1)
}

// cmdBench is `chorus bench`.
func cmdBench(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("bench")
	urls := fs.String("url", "http://127.0.0.1:3000", "server base URL(s), comma-separated; connections are spread over them")
	conns := fs.Int("conns", 1000, "subscriber connections")
	docs := fs.Int("docs", 1, "benchmark documents; every connection subscribes to all")
	writers := fs.Int("writers", 4, "writer connections")
	rate := fs.String("rate", "200/s", "total writes per second, e.g. 200/s")
	duration := fs.Duration("duration", 30*time.Second, "length of the writing phase")
	settle := fs.Duration("settle", 10*time.Second, "how long to wait for deliveries after the last write")
	via := fs.String("via", "client", "how writers write: client (Twilsock) or rest (REST v1)")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory with the server's credentials (if TWILIO_* is not set)")
	storeURL := storeFlag(fs, "postgres://… with the server's credentials, if TWILIO_* is not set (default: CHORUS_STORE_URL, unless --data-dir is named)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := benchConfig{conns: *conns, docs: *docs, writers: *writers, duration: *duration, settle: *settle, via: *via, dialers: 64}
	for _, u := range strings.Split(*urls, ",") {
		u = strings.TrimSuffix(strings.TrimSpace(u), "/")
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return usagef("invalid --url %q: want http(s)://host:port", u)
		}
		cfg.urls = append(cfg.urls, u)
	}
	r, err := strconv.ParseFloat(strings.TrimSuffix(*rate, "/s"), 64)
	if err != nil || !(r >= benchMinRate && r <= benchMaxRate) { // NaN fails both
		return usagef("invalid --rate %q: want N/s with %g <= N <= %d", *rate, benchMinRate, benchMaxRate)
	}
	cfg.rate = r
	switch {
	case cfg.conns < 1 || cfg.conns > benchMaxConns:
		return usagef("invalid --conns %d: want 1 to %d", cfg.conns, benchMaxConns)
	case cfg.docs < 1 || cfg.docs > benchMaxDocs:
		return usagef("invalid --docs %d: want 1 to %d", cfg.docs, benchMaxDocs)
	case cfg.writers < 1 || cfg.writers > benchMaxWriters:
		return usagef("invalid --writers %d: want 1 to %d", cfg.writers, benchMaxWriters)
	case cfg.duration <= 0 || cfg.duration > benchMaxDuration:
		return usagef("invalid --duration %v: want up to %v", cfg.duration, benchMaxDuration)
	case cfg.settle < 0 || cfg.settle > time.Minute:
		return usagef("invalid --settle %v: want up to 1m", cfg.settle)
	case cfg.via != "client" && cfg.via != "rest":
		return usagef("invalid --via %q: want client or rest", cfg.via)
	}
	creds, err := envCredentials(false)
	if err != nil {
		return err
	}
	if creds.APIKeySID == "" {
		if creds, err = deploymentCredentials(ctx, fs, *storeURL, *dataDir); err != nil {
			return err
		}
	}
	cfg.creds = creds
	cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	res, err := runBench(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	printBench(stdout, cfg, res)
	if res.interrupted {
		return fmt.Errorf("interrupted after %v of writing: the numbers above are partial", res.elapsed.Round(time.Millisecond))
	}
	if res.writeErrors > 0 {
		return fmt.Errorf("%d writes failed (the server went away, or refused them): the numbers above are partial", res.writeErrors)
	}
	if res.missed+res.duplicates+res.outOfOrder > 0 {
		return fmt.Errorf("delivery errors: %d missed (%d of them not delivered within --settle %v), %d duplicated, %d out of order",
			res.missed, res.trailing, cfg.settle, res.duplicates, res.outOfOrder)
	}
	return nil
}

func printBench(w io.Writer, cfg benchConfig, r *benchResult) {
	secs := r.elapsed.Seconds()
	fmt.Fprintf(w, "connections: %d over %d URL(s), connected in %v\n", r.conns, len(cfg.urls), r.connectTime.Round(time.Millisecond))
	fmt.Fprintf(w, "writes: %d ok, %d errors, %.1f/s (target %.1f/s, %d writers via %s, %d doc(s))\n",
		r.writes, r.writeErrors, float64(r.writes)/secs, cfg.rate, cfg.writers, cfg.via, cfg.docs)
	fmt.Fprintf(w, "deliveries: %d, %.1f/s\n", r.deliveries, float64(r.deliveries)/secs)
	fmt.Fprintf(w, "latency: p50 %v p90 %v p99 %v max %v\n", fmtDur(r.percentile(0.50)), fmtDur(r.percentile(0.90)),
		fmtDur(r.percentile(0.99)), fmtDur(r.percentile(1)))
	fmt.Fprintf(w, "missed: %d duplicated: %d out-of-order: %d\n", r.missed, r.duplicates, r.outOfOrder)
	if r.trailing > 0 {
		fmt.Fprintf(w, "of the missed, %d were not delivered within --settle %v (still in flight, or lost)\n", r.trailing, cfg.settle)
	}
	if r.interrupted {
		fmt.Fprintf(w, "interrupted after %v of the %v of writing\n", r.elapsed.Round(time.Millisecond), cfg.duration)
	}
}

func fmtDur(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
}

// runBench connects the subscribers, runs the writers and collects the
// measurements. Progress lines go to progress.
func runBench(ctx context.Context, cfg benchConfig, progress io.Writer) (*benchResult, error) {
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.httpClient == nil {
		// One transport with enough idle connections for the writers'
		// REST calls; the WebSocket dials use it too.
		cfg.httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	}
	tokTTL := max(time.Hour, cfg.duration+cfg.settle+10*time.Minute)
	mint := func(identity string) (string, error) {
		return token.Mint(token.Params{AccountSID: cfg.creds.AccountSID, APIKeySID: cfg.creds.APIKeySID,
			APISecret: cfg.creds.APISecret, Identity: identity, ServiceSID: cfg.creds.ServiceSID, TTL: tokTTL})
	}
	newClient := func(ctx context.Context, i int, identity string) (*client.Client, error) {
		tok, err := mint(identity)
		if err != nil {
			return nil, err
		}
		return client.New(ctx, tok, client.Options{
			URL: cfg.urls[i%len(cfg.urls)], Logger: cfg.logger, HTTPClient: cfg.httpClient,
			TokenProvider: func(context.Context) (string, error) { return mint(identity) },
		})
	}
	var run [6]byte
	rand.Read(run[:])
	runID := hex.EncodeToString(run[:])

	// The setup client creates the documents. It meets an idle server:
	// what does not answer in benchSetupWait is not there.
	cctx, cancel := context.WithTimeout(ctx, benchSetupWait)
	defer cancel()
	setup, err := newClient(cctx, 0, "bench-setup")
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.urls[0], err)
	}
	defer setup.Close()
	docSIDs := make([]string, cfg.docs)
	startIDs := make([]int64, cfg.docs)
	docs := make([]*client.Document, 0, cfg.docs)
	// The run's documents go when it ends; should it be killed, their
	// TTL removes them a day later: a benchmark of a production service
	// leaves nothing behind.
	defer func() {
		for i, doc := range docs {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), benchSetupWait)
			err := doc.Remove(rctx)
			cancel()
			if err != nil && !errors.Is(err, chorus.ErrDocumentNotFound) {
				// The server is likely gone: the rest expire with their TTL.
				fmt.Fprintf(os.Stderr, "bench: remove document %s: %v (%d left to expire in %v)\n", doc.SID(), err, len(docs)-i-1, benchDocTTL)
				return
			}
		}
	}()
	for d := range cfg.docs {
		// Each document its own wait: many over a slow link take long.
		dctx, dcancel := context.WithTimeout(ctx, benchSetupWait)
		doc, err := setup.Document(dctx, fmt.Sprintf("bench-%s-%d", runID, d), client.OpenOrCreate)
		if err != nil {
			dcancel()
			return nil, fmt.Errorf("create document %d of %d: %w", d+1, cfg.docs, err)
		}
		docs = append(docs, doc)
		err = doc.SetTTL(dctx, benchDocTTL)
		dcancel()
		if err != nil {
			return nil, fmt.Errorf("document TTL: %w", err)
		}
		docSIDs[d], startIDs[d] = doc.SID(), doc.LastEventID()
	}

	// Subscribers, opened cfg.dialers at a time.
	start := time.Now()
	subs := make([]*subscriber, cfg.conns)
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, cfg.dialers)
	var wg sync.WaitGroup
	for i := range subs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s, err := openSubscriber(ctx, cfg, i, docSIDs, startIDs, newClient)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("subscriber %d: %w", i, err)
			}
			subs[i] = s
		})
	}
	wg.Wait()
	defer func() {
		for _, s := range subs {
			if s != nil {
				s.c.Close()
			}
		}
	}()
	if firstErr != nil {
		return nil, firstErr
	}
	res := &benchResult{conns: cfg.conns, connectTime: time.Since(start)}
	fmt.Fprintf(progress, "subscribed %d connection(s) to %d document(s) in %v; writing for %v\n",
		cfg.conns, cfg.docs, res.connectTime.Round(time.Millisecond), cfg.duration)

	// Writers.
	okWrites := make([]atomic.Int64, cfg.docs)
	var writes, writeErrors atomic.Int64
	wctx, wcancel := context.WithTimeout(ctx, cfg.duration)
	defer wcancel()
	writeOne, closeWriters, err := newWriters(ctx, cfg, docSIDs, newClient)
	if err != nil {
		return nil, err
	}
	defer closeWriters()
	interval := time.Duration(float64(time.Second) * float64(cfg.writers) / cfg.rate)
	wstart := time.Now()
	for w := range cfg.writers {
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for seq := int64(1); ; seq++ {
				select {
				case <-wctx.Done():
					return
				case <-t.C:
				}
				d := int((int64(w) + seq) % int64(cfg.docs))
				p := benchPayload{Writer: w, Seq: seq, Nanos: time.Now().UnixNano()}
				// A write may take 30 s, and end after the phase, never
				// long after: a server gone away holds no run for the
				// client's retries.
				rctx, rcancel := context.WithTimeout(ctx, min(30*time.Second, time.Until(wstart.Add(cfg.duration+benchWriteGrace))))
				err := writeOne(rctx, w, d, p)
				rcancel()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					writeErrors.Add(1)
					cfg.logger.Warn("bench: write", slog.Any("err", err))
					continue
				}
				writes.Add(1)
				okWrites[d].Add(1)
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(wstart)
	res.writes, res.writeErrors = writes.Load(), writeErrors.Load()

	// Wait until every subscriber has every acknowledged write.
	var expected int64
	for d := range cfg.docs {
		expected += okWrites[d].Load()
	}
	expected *= int64(cfg.conns)
	deadline := time.Now().Add(cfg.settle)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var got int64
		for _, s := range subs {
			got += s.count.Load()
		}
		if got >= expected {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Stopped while writing or while waiting for the deliveries: the
	// counts are partial either way.
	res.interrupted = ctx.Err() != nil
	for _, s := range subs {
		s.c.Close() // stops its dispatcher: the fields below are ours now
	}
	var lat []time.Duration
	for _, s := range subs {
		res.deliveries += int64(len(s.latencies))
		res.duplicates += s.dups
		res.outOfOrder += s.ooo
		res.missed += s.missed
		for d := range cfg.docs {
			// Events the subscriber never got at the end.
			if want := startIDs[d] + okWrites[d].Load(); s.last[d] < want {
				res.missed += want - s.last[d]
				res.trailing += want - s.last[d]
			}
		}
		lat = append(lat, s.latencies...)
	}
	slices.Sort(lat)
	res.latencies = lat
	return res, nil
}

func openSubscriber(ctx context.Context, cfg benchConfig, i int, docSIDs []string, startIDs []int64,
	newClient func(context.Context, int, string) (*client.Client, error)) (*subscriber, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, err := newClient(cctx, i, fmt.Sprintf("bench-%d", i))
	if err != nil {
		return nil, err
	}
	s := &subscriber{c: c, last: slices.Clone(startIDs), lastSeq: make([]map[int]int64, len(docSIDs))}
	for d, sid := range docSIDs {
		s.lastSeq[d] = make(map[int]int64)
		doc, err := c.Document(cctx, sid, client.OpenExisting)
		if err != nil {
			c.Close()
			return nil, err
		}
		// Events after the setup client's snapshot are replayed, so
		// counting from startIDs misses nothing.
		doc.OnEvent(func(ev client.Event) { s.onEvent(d, ev) })
	}
	return s, nil
}

// newWriters returns a function that writes p to document d as writer w.
func newWriters(ctx context.Context, cfg benchConfig, docSIDs []string,
	newClient func(context.Context, int, string) (*client.Client, error)) (func(context.Context, int, int, benchPayload) error, func(), error) {
	if cfg.via == "rest" {
		svc := cfg.creds.ServiceSID
		if svc == "" {
			svc = "default"
		}
		return func(ctx context.Context, w, d int, p benchPayload) error {
			data, _ := json.Marshal(p)
			form := url.Values{"Data": {string(data)}}
			u := cfg.urls[w%len(cfg.urls)] + "/v1/Services/" + svc + "/Documents/" + docSIDs[d]
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(cfg.creds.APIKeySID, cfg.creds.APISecret)
			resp, err := cfg.httpClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("POST %s: %s: %s", u, resp.Status, body)
			}
			return nil
		}, func() {}, nil
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	clients := make([]*client.Client, cfg.writers)
	docs := make([][]*client.Document, cfg.writers)
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}
	for w := range cfg.writers {
		c, err := newClient(cctx, w, fmt.Sprintf("bench-writer-%d", w))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("writer %d: %w", w, err)
		}
		clients[w] = c
		for _, sid := range docSIDs {
			doc, err := c.Document(cctx, sid, client.OpenExisting)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("writer %d: %w", w, err)
			}
			docs[w] = append(docs[w], doc)
		}
	}
	return func(ctx context.Context, w, d int, p benchPayload) error {
		return docs[w][d].Set(ctx, p)
	}, closeAll, nil
}
