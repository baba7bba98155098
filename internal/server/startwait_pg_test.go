package server_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/testrelay"
)

// TestStartWaitsForPostgres: likewise for the PostgreSQL store.
func TestStartWaitsForPostgres(t *testing.T) {
	db := servertest.NewDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	relay := testrelay.New(t, u.Host)
	relay.Kill()
	u.Host = relay.Addr
	s, err := server.NewWhenUp(t, server.Config{StoreURL: u.String(), StartWait: time.Minute}, "PostgreSQL", relay.Restart)
	if err != nil {
		t.Fatalf("New = %v, want it to open the store once PostgreSQL is up", err)
	}
	server.CheckReady(t, s)
}

// TestStartWaitRefusedByPostgres: a database that does not exist fails
// New at once, although StartWait is set.
func TestStartWaitRefusedByPostgres(t *testing.T) {
	missing, err := url.Parse(servertest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	missing.Path = "/chorus_no_such_database"
	server.NewRefused(t, server.Config{StoreURL: missing.String()})
}
