package webhook

import (
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// A replay's slot is taken before it runs, so that concurrent calls do not
// all pass the interval; one that put nothing back gives it back.
func TestReplaySlot(t *testing.T) {
	d := &Dispatcher{cfg: Config{ReplayInterval: time.Minute}, replayedAt: map[string]time.Time{}}
	release, err := d.reserveReplay("IS1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.reserveReplay("IS1"); chorus.ErrorCode(err) != 20429 {
		t.Errorf("a second replay while the first runs = %v, want 20429", err)
	}
	if other, err := d.reserveReplay("IS2"); err != nil {
		t.Errorf("another service's replay = %v", err)
	} else {
		other(true)
	}
	release(false) // nothing was replayed
	again, err := d.reserveReplay("IS1")
	if err != nil {
		t.Fatalf("a replay after one that put nothing back = %v", err)
	}
	again(true)
	if _, err := d.reserveReplay("IS1"); chorus.ErrorCode(err) != 20429 {
		t.Errorf("a replay right after one that put webhooks back = %v, want 20429", err)
	}
}

// A failed name lookup is shown to the service's account without the
// resolver's address, an internal one.
func TestRedactErrHidesTheResolver(t *testing.T) {
	err := &url.Error{Op: "Post", URL: "http://db.internal.example/?secret=s3cr3t", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "db.internal.example", Server: "10.0.0.2:53", IsNotFound: true}}}
	if got, want := redactErr(err), "lookup db.internal.example: no such host"; got != want {
		t.Errorf("redactErr = %q, want %q", got, want)
	}
}
