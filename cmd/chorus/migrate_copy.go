package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// copyFlags are the flags of `chorus migrate --from-data-dir`.
type copyFlags struct {
	dataDir        string
	overwrite      bool
	overwriteCreds bool
	asJSON         bool
}

func addCopyFlags(fs *flag.FlagSet) *copyFlags {
	c := &copyFlags{}
	fs.StringVar(&c.dataDir, "from-data-dir", "", "copy the embedded store of this data directory into --store (repeatable: once while its server runs, once after stopping it)")
	fs.BoolVar(&c.overwrite, "overwrite", false, "with --from-data-dir: replace target objects that hold a copied object's SID or unique name")
	fs.BoolVar(&c.overwriteCreds, "overwrite-credentials", false, "with --from-data-dir: make the target's API keys of the copied accounts the source's (keys the source no longer has removed; the target's auth tokens and main keys kept)")
	fs.BoolVar(&c.asJSON, "json", false, "with --from-data-dir: print the summary as JSON")
	return c
}

// copyStore copies every account, API key, service, object, item and
// permission of an embedded store into PostgreSQL: the way to grow from one
// node to a cluster. It is the import of import.go with a store as source,
// so it is idempotent and resumable the same way.
func copyStore(ctx context.Context, c *copyFlags, storeURL string, stdout, stderr io.Writer) error {
	path := filepath.Join(c.dataDir, server.DBFile)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no embedded store to copy: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src, err := openForReading(ctx, c.dataDir, path, logger)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, storeURL, logger)
	if err != nil {
		return fmt.Errorf("open target: %w", err)
	}
	defer dst.Close()
	if err := dst.LockImport(ctx); err != nil { // released by Close
		return err
	}
	opt := transfer.Options{Overwrite: c.overwrite, OverwriteCredentials: c.overwriteCreds, Logger: logger}
	var prog *progress
	if isTerminal(stderr) {
		prog = &progress{w: stderr}
		opt.Progress = prog.update
	}
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, opt)
	if prog != nil {
		prog.finish()
	}
	warnPendingWebhooks(ctx, src, stderr)
	if c.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		writeSummary(stdout, rep, targetName(storeURL, ""))
	}
	if err != nil {
		return fmt.Errorf("%w (copied before the failure: %s; run the same command again to continue)", err, copied(rep))
	}
	if n := len(rep.Conflicts); n > 0 {
		return &codeError{exitRefused, fmt.Errorf("refused %d conflicting records (listed above); --overwrite replaces objects, --overwrite-credentials API keys", n)}
	}
	return nil
}

// warnPendingWebhooks says so when the embedded store still holds
// webhooks that were never delivered, or abandoned ones kept to be
// replayed. The copy does not carry them: the PostgreSQL nodes would
// deliver them again at every run of the copy, which is meant to be
// repeated. Let the old node deliver (or replay) them first.
func warnPendingWebhooks(ctx context.Context, src chorus.Store, stderr io.Writer) {
	var backlog []*chorus.OutboxBacklog
	err := src.View(ctx, func(tx chorus.ReadTx) (err error) {
		backlog, err = tx.OutboxBacklog(ctx)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "warning: could not read the embedded store's webhook outbox: %v\n", err)
		return
	}
	n := 0
	for _, b := range backlog {
		n += b.Pending
	}
	if n > 0 {
		fmt.Fprintf(stderr, "warning: %d webhooks of %d services were still waiting for delivery in %s and are not copied; "+
			"run its server until chorus_webhooks_pending is 0 (/metrics), then copy again, or they are lost\n", n, len(backlog), "the embedded store")
	}
	var kept map[string]int
	err = src.View(ctx, func(tx chorus.ReadTx) (err error) {
		kept, err = tx.AbandonedCounts(ctx, nil)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "warning: could not count the embedded store's abandoned webhooks: %v\n", err)
		return
	}
	n = 0
	for _, k := range kept {
		n += k
	}
	if n > 0 {
		fmt.Fprintf(stderr, "warning: %d abandoned webhooks of %d services, kept in the embedded store to be replayed, are not copied; "+
			"replay them from its server first (console, or POST /admin/v1/Webhooks/{ServiceSid}/Abandoned/Replay), or they are lost\n", n, len(kept))
	}
}
