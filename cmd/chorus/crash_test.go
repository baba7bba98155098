package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestAcknowledgedWritesSurviveSIGKILL drives concurrent REST writes into
// the real binary, kills it with SIGKILL mid-stream, restarts it on the same
// data directory and checks that every write answered 2xx is there.
func TestAcknowledgedWritesSurviveSIGKILL(t *testing.T) {
	dataDir := t.TempDir()
	p := startServe(t, dataDir)
	creds := credentials(t, dataDir)
	svc := creds[envServiceSID]
	client := &http.Client{Timeout: 5 * time.Second}

	post := func(base, path string, form url.Values) (int, []byte, error) {
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(creds[envAPIKey], creds[envAPISecret])
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	// One list that every writer also appends to.
	code, body, err := post(p.base, "/v1/Services/"+svc+"/Lists", url.Values{"UniqueName": {"log"}})
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create list: %d %s %v", code, body, err)
	}

	const writers = 16
	var (
		mu       sync.Mutex
		docs     = map[string]string{} // unique name → data acknowledged
		items    = map[int]string{}    // list index → data acknowledged
		acked    atomic.Int64
		stopping = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopping:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				data := fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				code, _, err := post(p.base, "/v1/Services/"+svc+"/Documents", url.Values{"UniqueName": {name}, "Data": {data}})
				if err != nil {
					return // the server died under us: unacknowledged
				}
				if code == http.StatusCreated {
					mu.Lock()
					docs[name] = data
					mu.Unlock()
					acked.Add(1)
				}
				code, b, err := post(p.base, "/v1/Services/"+svc+"/Lists/log/Items", url.Values{"Data": {data}})
				if err != nil {
					return
				}
				if code == http.StatusCreated {
					var it struct{ Index int }
					if err := json.Unmarshal(b, &it); err != nil {
						t.Errorf("list item body %s: %v", b, err)
						return
					}
					mu.Lock()
					items[it.Index] = data
					mu.Unlock()
					acked.Add(1)
				}
			}
		}()
	}
	// Kill once a good number of writes were acknowledged, while writers
	// are still in flight.
	deadline := time.Now().Add(60 * time.Second)
	for acked.Load() < 400 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	close(stopping)
	wg.Wait()
	if acked.Load() < 400 {
		t.Fatalf("only %d writes acknowledged in 60s", acked.Load())
	}

	p2 := startServe(t, dataDir)
	get := func(path string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, p2.base+path, nil)
		req.SetBasicAuth(creds[envAPIKey], creds[envAPISecret])
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	missing := 0
	for name, data := range docs {
		code, b := get("/v1/Services/" + svc + "/Documents/" + name)
		var doc struct{ Data json.RawMessage }
		if code != http.StatusOK || json.Unmarshal(b, &doc) != nil || string(doc.Data) != data {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged document %s lost after SIGKILL: %d %s", name, code, b)
			}
		}
	}
	for idx, data := range items {
		code, b := get(fmt.Sprintf("/v1/Services/%s/Lists/log/Items/%d", svc, idx))
		var it struct{ Data json.RawMessage }
		if code != http.StatusOK || json.Unmarshal(b, &it) != nil || string(it.Data) != data {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged list item %d lost after SIGKILL: %d %s", idx, code, b)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes lost", missing, len(docs)+len(items))
	}
	t.Logf("%d documents and %d list items acknowledged before SIGKILL; all present after restart", len(docs), len(items))
}
