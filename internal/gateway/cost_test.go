package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// The cost benchmarks measure the server side of many real connections.
// The clients run in a child process (this test binary re-executed with
// costClientEnv set) so that their memory and CPU are not counted.
//
//	go test -run '^$' -bench 'IdleConnMemory|DeliveryCPU' -benchtime=1x ./internal/gateway/
const costClientEnv = "CHORUS_GW_COST_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(costClientEnv) != "" {
		if err := runCostClient(); err != nil {
			fmt.Fprintln(os.Stderr, "cost client:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// costParams are passed to the client process in its environment.
type costParams struct {
	URL    string `json:"url"`
	Token  string `json:"token"`
	SID    string `json:"sid"`
	Start  int64  `json:"start"`
	Conns  int    `json:"conns"`
	Events int    `json:"events"` // live events each connection expects
}

// costClients is the client process as seen by the server side.
type costClients struct {
	cmd   *exec.Cmd
	lines chan string
	stdin io.WriteCloser
}

// startCostClients starts the client process and waits until every
// connection is initialized and subscribed.
func startCostClients(tb testing.TB, p costParams) *costClients {
	tb.Helper()
	js, _ := json.Marshal(p)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// The clients use every core whatever GOMAXPROCS the server runs with.
	cmd.Env = append(os.Environ(), costClientEnv+"="+string(js), fmt.Sprintf("GOMAXPROCS=%d", runtime.NumCPU()))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start client process: %v", err)
	}
	cc := &costClients{cmd: cmd, lines: make(chan string, 16), stdin: stdin}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			cc.lines <- sc.Text()
		}
		close(cc.lines)
	}()
	tb.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	cc.expect(tb, "ready", 120*time.Second)
	return cc
}

// expect waits for the line want from the client process.
func (cc *costClients) expect(tb testing.TB, want string, timeout time.Duration) {
	tb.Helper()
	select {
	case l, ok := <-cc.lines:
		if !ok {
			tb.Fatalf("client process exited waiting for %q", want)
		}
		if l != want {
			tb.Fatalf("client process said %q, want %q", l, want)
		}
	case <-time.After(timeout):
		tb.Fatalf("client process: no %q within %v", want, timeout)
	}
}

// cpuTime returns the CPU time (user+system) used by process pid so far
// (0 = this process).
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	if pid == 0 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			tb.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// rss returns this process's resident set size in bytes.
func rss(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// settledMemory returns heap+stack in use and RSS after the garbage is
// collected and returned to the OS.
func settledMemory(tb testing.TB) (heap, stack, resident int64) {
	tb.Helper()
	var ms runtime.MemStats
	for i := 0; i < 2; i++ {
		runtime.GC()
	}
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse), int64(ms.StackInuse), rss(tb)
}

// costDoc creates the subscribed document.
func costDoc(tb testing.TB, e *env) (sid string, start int64) {
	tb.Helper()
	w := e.session("writer")
	doc := wantStatus(tb, "create", w.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	return doc["sid"].(string), num(doc["last_event_id"])
}

// BenchmarkIdleConnMemory reports the server's memory per idle connection
// that is initialized and subscribed to one document.
func BenchmarkIdleConnMemory(b *testing.B) {
	const conns = 2000
	if os.Getenv("CHORUS_GW_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	e := newEnv(b)
	sid, start := costDoc(b, e)
	time.Sleep(200 * time.Millisecond)
	heap0, stack0, rss0 := settledMemory(b)
	startCostClients(b, costParams{URL: e.wsURL, Token: e.token("bench", time.Hour), SID: sid, Start: start, Conns: conns})
	time.Sleep(2 * time.Second) // let the sessions go idle
	if st := e.gw.Stats(); st.Connections != conns+1 || st.Subscriptions != conns {
		b.Fatalf("stats = %+v, want %d connections, %d subscriptions", st, conns+1, conns)
	}
	heap1, stack1, rss1 := settledMemory(b)
	if path := os.Getenv("CHORUS_GW_HEAPPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	b.ReportMetric(float64(heap1-heap0+stack1-stack0)/conns, "heap+stack-B/conn")
	b.ReportMetric(float64(stack1-stack0)/conns, "stack-B/conn")
	b.ReportMetric(float64(rss1-rss0)/conns, "rss-B/conn")
	b.ReportMetric(float64(runtime.NumGoroutine())/conns, "goroutines/conn")
}

// BenchmarkDeliveryCPU reports the server's CPU time per million
// deliveries to 1,000 subscribed connections at 50 events/s (lightly
// loaded); the clients ack every frame like the SDK.
func BenchmarkDeliveryCPU(b *testing.B) {
	const (
		conns  = 1000
		events = 500
		rate   = 50 // events/s
	)
	e := newEnv(b)
	sid, start := costDoc(b, e)
	cc := startCostClients(b, costParams{URL: e.wsURL, Token: e.token("bench", time.Hour), SID: sid, Start: start, Conns: conns, Events: events})
	time.Sleep(time.Second)
	data := json.RawMessage(`{"temperature":23,"label":"benchmark payload"}`)
	ctx := context.Background()
	srv0, cli0 := cpuTime(b, 0), cpuTime(b, cc.cmd.Process.Pid)
	t0 := time.Now()
	tick := time.NewTicker(time.Second / rate)
	for i := 1; i <= events; i++ {
		<-tick.C
		e.bus.Publish(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: start + int64(i), ObjectSID: sid, ServiceSID: e.svc.SID,
			Kind: chorus.KindDocument, Revision: "1", Data: data, DateCreated: time.Now()})
	}
	tick.Stop()
	cc.expect(b, "done", 60*time.Second)
	wall := time.Since(t0)
	srv, cli := cpuTime(b, 0)-srv0, cpuTime(b, cc.cmd.Process.Pid)-cli0
	deliveries := float64(conns * events)
	b.ReportMetric(srv.Seconds()/(deliveries/1e6), "server-cpu-s/Mdeliveries")
	b.ReportMetric(cli.Seconds()/(deliveries/1e6), "client-cpu-s/Mdeliveries")
	b.ReportMetric(srv.Seconds()/wall.Seconds(), "server-cores")
	if st := e.gw.Stats(); st.SlowConsumers != 0 || st.Delivered < uint64(deliveries) {
		b.Errorf("stats = %+v, want no slow consumers and %v deliveries", st, deliveries)
	}
}

// runCostClient is the client process: it opens the connections, inits
// and subscribes each one, says "ready", acks every frame, says "done"
// once every connection has its events, and exits when stdin closes.
func runCostClient() error {
	var p costParams
	if err := json.Unmarshal([]byte(os.Getenv(costClientEnv)), &p); err != nil {
		return err
	}
	var (
		got      atomic.Int64
		doneOnce sync.Once
		out      sync.Mutex
	)
	say := func(s string) {
		out.Lock()
		fmt.Println(s)
		out.Unlock()
	}
	want := int64(p.Conns) * int64(p.Events)
	onEvent := func() {
		if got.Add(1) == want {
			doneOnce.Do(func() { say("done") })
		}
	}
	ctx := context.Background()
	sem := make(chan struct{}, 32)
	errc := make(chan error, p.Conns)
	var wg sync.WaitGroup
	var conns []*websocket.Conn
	var connsMu sync.Mutex
	for i := 0; i < p.Conns; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ws, err := costSession(ctx, p, int64(i+1), onEvent)
			if err != nil {
				errc <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			connsMu.Lock()
			conns = append(conns, ws)
			connsMu.Unlock()
		}(i)
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	say("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, ws := range conns {
		ws.CloseNow()
	}
	return nil
}

// costSession opens one subscribed session; it returns once the
// subscription is established. Its reader acks every non-reply frame.
func costSession(ctx context.Context, p costParams, corr int64, onEvent func()) (*websocket.Conn, error) {
	ws, _, err := websocket.Dial(ctx, p.URL, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	replies := make(chan *protocol.Frame, 4)
	established := make(chan struct{})
	var wmu sync.Mutex
	write := func(h *protocol.Header, payload []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return ws.Write(ctx, websocket.MessageBinary, protocol.Encode(nil, h, payload))
	}
	go func() {
		isEstablished := false
		for {
			_, msg, err := ws.Read(ctx)
			if err != nil {
				return
			}
			f, err := protocol.Decode(msg, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, "cost client: decode:", err)
				return
			}
			if f.Header.Method == protocol.MethodReply {
				replies <- f
				continue
			}
			write(protocol.NewReply(f.Header.ID, protocol.StatusOK), nil)
			if f.Header.Method != protocol.MethodNotification {
				continue
			}
			if !isEstablished {
				isEstablished = true
				close(established)
				continue
			}
			for range eventsIn(msg) { // a merged notification carries several
				onEvent()
			}
		}
	}()
	call := func(fields map[string]any, payload []byte) error {
		fields["id"] = "TM" + chorus.NewSID("XX")[2:]
		h, err := protocol.HeaderOf(fields)
		if err != nil {
			return err
		}
		if err := write(h, payload); err != nil {
			return err
		}
		select {
		case f := <-replies:
			if f.Header.Status == nil || f.Header.Status.Code != 200 {
				return fmt.Errorf("%v: status %+v", fields["method"], f.Header.Status)
			}
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%v: no reply", fields["method"])
		}
	}
	if err := call(map[string]any{"method": "init", "token": p.Token, "metadata": map[string]any{"ver": "1.0.2"},
		"capabilities": []string{"client_update"}}, nil); err != nil {
		ws.CloseNow()
		return nil, err
	}
	body, _ := json.Marshal(map[string]any{"event_protocol_version": 4, "action": "establish", "correlation_id": corr,
		"retried_requests": 0, "ttl_in_s": -1, "requests": []any{docSub(p.SID, p.Start)}})
	if err := call(map[string]any{"method": "message", "active_grant": "data_sync", "payload_type": "application/json",
		"http_request": map[string]any{"host": "cds.test:1", "path": "/v4/Subscriptions", "method": "POST", "params": map[string]any{},
			"headers": map[string]any{"Content-Type": "application/json"}}}, body); err != nil {
		ws.CloseNow()
		return nil, err
	}
	select {
	case <-established:
	case <-time.After(30 * time.Second):
		ws.CloseNow()
		return nil, errors.New("no subscription_established")
	}
	return ws, nil
}
