package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// TestBackupUnderWrites takes a backup with `chorus backup` while writers
// keep writing to a running `chorus serve`, restores it with `chorus
// restore` and checks that it passes the integrity check and holds every
// write acknowledged before the backup began; then that truncated and
// foreign files are refused without touching the data directory.
func TestBackupUnderWrites(t *testing.T) {
	dataDir := t.TempDir()
	p := startServe(t, dataDir)
	creds := credentials(t, dataDir)
	svc := creds[envServiceSID]
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(form url.Values) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, p.base+"/v1/Services/"+svc+"/Documents", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(creds[envAPIKey], creds[envAPISecret])
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}

	var (
		mu    sync.Mutex
		acked = map[string]string{} // unique name → data, acknowledged
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		errs  = make(chan error, 8)
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name, data := fmt.Sprintf("w%d %d ü", w, i), fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				code, err := post(url.Values{"UniqueName": {name}, "Data": {data}})
				if err != nil || code != http.StatusCreated {
					errs <- fmt.Errorf("write %s: %d %v", name, code, err)
					return
				}
				mu.Lock()
				acked[name] = data
				mu.Unlock()
			}
		}()
	}
	waitAcked := func(n int) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			got := len(acked)
			mu.Unlock()
			if got >= n {
				return
			}
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes acknowledged in 60s", got)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcked(300)
	mu.Lock()
	before := make(map[string]string, len(acked))
	for k, v := range acked {
		before[k] = v
	}
	mu.Unlock()

	backup := filepath.Join(t.TempDir(), "chorus.backup")
	out, errOut, code := chorusCmd(t, cleanEnv(), "backup", "--data-dir", dataDir, "--out", backup)
	if code != 0 {
		t.Fatalf("chorus backup exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "integrity check ok") {
		t.Errorf("chorus backup output %q", out)
	}
	// A second backup to the same name is refused up front, in words.
	if _, errOut, code := chorusCmd(t, cleanEnv(), "backup", "--data-dir", dataDir, "--out", backup); code != exitUsage || !strings.Contains(errOut, "exists") {
		t.Errorf("backup over an existing file: exit %d, stderr %q; want %d saying it exists", code, errOut, exitUsage)
	}
	mu.Lock()
	during := len(acked) - len(before)
	mu.Unlock()
	waitAcked(len(before) + during + 50) // writes kept flowing
	close(stop)
	wg.Wait()
	p.stop(t)
	t.Logf("%d writes acknowledged before the backup, %d during it", len(before), during)

	restored := filepath.Join(t.TempDir(), "restored")
	if _, errOut, code := chorusCmd(t, cleanEnv(), "restore", "--data-dir", restored, backup); code != 0 {
		t.Fatalf("chorus restore exit %d: %s", code, errOut)
	}
	db := filepath.Join(restored, server.DBFile)
	ctx := context.Background()
	if err := sqlite.Check(ctx, db); err != nil {
		t.Fatalf("restored database: %v", err)
	}
	st, err := sqlite.Open(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	missing := 0
	err = st.View(ctx, func(tx chorus.ReadTx) error {
		for name, data := range before {
			o, err := tx.ObjectByName(ctx, chorus.KindDocument, svc, name)
			if err != nil || string(o.Data) != data {
				missing++
				if missing < 5 {
					t.Errorf("acknowledged document %q: %v (data %s, want %s)", name, err, o.Data, data)
				}
			}
		}
		return nil
	})
	if err != nil || missing > 0 {
		t.Fatalf("%d of %d acknowledged writes missing from the backup (%v)", missing, len(before), err)
	}

	// Refusals leave the target directory as it was.
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.backup")
	foreign := filepath.Join(dir, "foreign.db")
	if err := os.WriteFile(truncated, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	appended := filepath.Join(dir, "appended.backup")
	if err := os.WriteFile(appended, append(slices.Clone(raw), "more"...), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := os.ReadFile(filepath.Join(dataDir, server.DBFile)) // a SQLite file, but no backup
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, live, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, into, want string }{
		{truncated, filepath.Join(dir, "new"), "truncated"},
		{truncated, empty, "truncated"},
		{appended, empty, "something appended"},
		{foreign, empty, "no Chorus backup header"},
		{backup, restored, "not empty"},
	} {
		_, errOut, code := chorusCmd(t, cleanEnv(), "restore", "--data-dir", tc.into, tc.file)
		if code != exitError || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("restore %s into %s: exit %d, stderr %q; want exit 1 and one line with %q", filepath.Base(tc.file), filepath.Base(tc.into), code, errOut, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !os.IsNotExist(err) {
		t.Errorf("a refused restore created the data directory: %v", err)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("a refused restore left %d entries in the empty data directory", len(ents))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 4 {
		t.Errorf("refused restores left files behind next to the data directory: %v", ents)
	}

	// A restore killed while staging left its staging directory inside the
	// data directory: the next restore clears it instead of refusing.
	stale := filepath.Join(empty, ".restore-4242")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, server.DBFile), raw[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	// Modified lately, it is a running restore's (they touch theirs every
	// minute): a second restore into the directory is refused and leaves
	// it alone (it removed it, and the first failed blaming its file).
	if _, errOut, code := chorusCmd(t, cleanEnv(), "restore", "--data-dir", empty, backup); code != exitError || !strings.Contains(errOut, "another restore into") {
		t.Errorf("restore beside a running restore's staging directory: exit %d, stderr %q; want a refusal", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(stale, server.DBFile)); err != nil {
		t.Errorf("the refused restore touched the running one's staging directory: %v", err)
	}
	longAgo := time.Now().Add(-10 * time.Minute)
	if err := os.Chtimes(stale, longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	// The lock files a server or an import left (the database itself
	// removed) are no data, nor is a new ext4 volume's lost+found.
	for _, name := range []string{server.ServeLockFile, importLockFile} {
		if err := os.WriteFile(filepath.Join(empty, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(empty, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "restore", "--data-dir", empty, backup); code != 0 {
		t.Errorf("restore over a killed restore's staging directory, lock files and lost+found: exit %d, stderr %q", code, errOut)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 4 {
		t.Errorf("after the restore the data directory holds %v, want the database, the lock files and lost+found", ents)
	} else if _, err := os.Stat(filepath.Join(empty, server.DBFile)); err != nil {
		t.Errorf("after the restore: %v", err)
	}
}

// The restored database never replaces one that appeared in the data
// directory after the emptiness check (a `chorus serve` started on it
// during the restore): rename(2) would have, and the running server would
// have kept writing to an unlinked file.
func TestInstallRestoredNeverReplaces(t *testing.T) {
	dataDir := t.TempDir()
	stage, err := os.MkdirTemp(dataDir, ".restore-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, server.DBFile), []byte("restored"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dataDir, server.DBFile)
	if err := os.WriteFile(live, []byte("live"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := installRestored(stage, dataDir, true); err == nil || !strings.Contains(err.Error(), "during the restore") {
		t.Errorf("installRestored over an existing database = %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(live); string(b) != "live" {
		t.Errorf("the existing database now holds %q", b)
	}

	// Into the empty directory it was checked to be: the staged file takes
	// its name and the staging directory goes.
	if err := os.Remove(live); err != nil {
		t.Fatal(err)
	}
	if err := installRestored(stage, dataDir, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(live); string(b) != "restored" {
		t.Errorf("the restored database holds %q", b)
	}
	if ents, _ := os.ReadDir(dataDir); len(ents) != 1 {
		t.Errorf("the data directory holds %v, want the database alone", ents)
	}
}

// With CHORUS_STORE_URL set the state is in PostgreSQL: `chorus backup`
// refuses to read ./chorus-data (a leftover from before a migration) and
// `chorus admin credentials` reads PostgreSQL, unless --data-dir names a
// directory.
func TestEmbeddedCommandsUnderPostgres(t *testing.T) {
	pg := cleanEnv("CHORUS_STORE_URL=postgres://127.0.0.1:1/none")
	out := filepath.Join(t.TempDir(), "b.backup")
	if _, errOut, code := chorusCmd(t, pg, "backup", "--out", out); code != exitError || !strings.Contains(errOut, "CHORUS_STORE_URL is set") {
		t.Errorf("chorus backup with CHORUS_STORE_URL: exit %d, stderr %q; want a refusal naming it", code, errOut)
	}
	// Nor does restore write ./chorus-data, which no node would serve.
	if _, errOut, code := chorusCmd(t, pg, "restore", out); code != exitError || !strings.Contains(errOut, "CHORUS_STORE_URL is set") {
		t.Errorf("chorus restore with CHORUS_STORE_URL: exit %d, stderr %q; want a refusal naming it", code, errOut)
	}
	// admin credentials reads the PostgreSQL store (TestCredentialsFromPostgres).
	if _, errOut, code := chorusCmd(t, pg, "admin", "credentials"); code != exitError || !strings.Contains(errOut, "open store") {
		t.Errorf("chorus admin credentials with CHORUS_STORE_URL: exit %d, stderr %q; want the store read", code, errOut)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused backup wrote %s: %v", out, err)
	}
	// Named, the directory is used: this one holds no database.
	if _, errOut, code := chorusCmd(t, pg, "admin", "credentials", "--data-dir", t.TempDir()); code != exitError || !strings.Contains(errOut, "no credentials") {
		t.Errorf("admin credentials --data-dir with CHORUS_STORE_URL: exit %d, stderr %q; want the data directory read", code, errOut)
	}
}

// TestBackupRemovesAbandonedStaging: a backup killed with SIGKILL leaves
// its staging copy (the whole database, secrets included) and its
// temporary output next to --out, and a restore into a new directory its
// staging directory next to it. The next backup or restore there removes
// those untouched for an hour, and leaves recent ones (another backup
// running, whatever its process ID says) and anything else alone.
func TestBackupRemovesAbandonedStaging(t *testing.T) {
	dataDir := t.TempDir()
	startServe(t, dataDir).stop(t) // a database to back up

	dir := t.TempDir()
	backup := filepath.Join(dir, "chorus.backup")
	old := time.Now().Add(-2 * time.Hour)
	made := []struct {
		name       string
		dir, stale bool
		keep       bool
	}{
		{".chorus-backup-4242-123", true, true, false},
		{".chorus.backup.tmp-4242-456", false, true, false},
		{".restored.restore-4242-2", true, true, false},
		{fmt.Sprintf(".chorus-backup-%d-789", os.Getpid()), true, true, false}, // a live PID, in another namespace say
		{".chorus-backup-1-5", true, false, true},                              // recent: in use
		{".chorus-backup-2-6", true, true, true},                               // an old directory, a recent file in it
		{".chorus.backup.tmp-1-6", false, false, true},
		{".other.backup.tmp-4242-1", false, true, true},         // another backup's name, before the marker
		{".other.backup.chorus-tmp-4242-1", false, true, false}, // another backup's name
		{".other.backup.chorus-tmp-4242-2", false, false, true}, // in use
		{"other.backup.chorus-tmp-4242-3", false, true, true},   // not hidden: not one of ours
		{"chorus-backup-notes", true, true, true},
	}
	for _, m := range made {
		path := filepath.Join(dir, m.name)
		file := path
		if m.dir {
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			file = filepath.Join(path, "snapshot.db")
		}
		if err := os.WriteFile(file, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		if m.stale {
			for _, p := range []string{file, path} {
				if p == file && m.keep && m.dir {
					continue // the file stays recent
				}
				if err := os.Chtimes(p, old, old); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "backup", "--data-dir", dataDir, "--out", backup); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, errOut)
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "restore", "--data-dir", filepath.Join(dir, "restored"), backup); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, errOut)
	}
	for _, m := range made {
		_, err := os.Lstat(filepath.Join(dir, m.name))
		if exists := err == nil; exists != m.keep {
			t.Errorf("%s: exists %v, want %v", m.name, exists, m.keep)
		}
	}
}

// TestRestoreInterruptedSaysSo: a restore stopped by Ctrl-C says it was
// interrupted, not that the backup was refused (an operator would throw a
// good backup away), and leaves the data directory as it was.
func TestRestoreInterruptedSaysSo(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), server.DBFile)
	st, err := sqlite.Open(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	backup := filepath.Join(t.TempDir(), "chorus.backup")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlite.Backup(ctx, db, t.TempDir(), f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	into := filepath.Join(t.TempDir(), "data")
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	err = cmdRestore(stopped, []string{"--data-dir", into, backup}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "interrupted") || strings.Contains(err.Error(), "refused") {
		t.Errorf("an interrupted restore = %v, want it said interrupted, not refused", err)
	}
	if _, err := os.Stat(into); !os.IsNotExist(err) {
		t.Errorf("the interrupted restore made the data directory: %v", err)
	}
	if err := cmdRestore(ctx, []string{"--data-dir", into, backup}, io.Discard); err != nil {
		t.Errorf("the same backup, not interrupted: %v", err)
	}
}

// TestCopyWarnsOfWebhooksLeftBehind: migrate --from-data-dir carries no
// webhooks; it says how many pending and how many abandoned ones (kept to
// be replayed) stay behind. It said nothing of the abandoned ones, which
// vanished from the console after the move (a tester's finding).
func TestCopyWarnsOfWebhooksLeftBehind(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), server.DBFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var none strings.Builder
	warnPendingWebhooks(ctx, st, &none)
	if none.Len() != 0 {
		t.Errorf("warnings with no webhooks: %q", none.String())
	}
	now := time.Now()
	entry := func(obj string) *chorus.OutboxEntry {
		return &chorus.OutboxEntry{ServiceSID: "IS1", OrderKey: obj, DateCreated: now, NextAttempt: now,
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: "IS1", ObjectSID: obj, Kind: chorus.KindDocument, DateCreated: now}}
	}
	pending, given := entry("ET1"), entry("ET2")
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		for _, e := range []*chorus.OutboxEntry{pending, given} {
			if err := tx.AppendOutbox(ctx, e); err != nil {
				return err
			}
		}
		return tx.AbandonOutbox(ctx, given, now)
	}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	warnPendingWebhooks(ctx, st, &out)
	if !strings.Contains(out.String(), "1 webhooks of 1 services were still waiting") ||
		!strings.Contains(out.String(), "1 abandoned webhooks of 1 services") {
		t.Errorf("warnings %q: want the pending one and the abandoned one", out.String())
	}
}
