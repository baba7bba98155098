package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, to watch the target from outside

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// TestImportCommand runs `chorus import` against a running `chorus serve`:
// wrong credentials and a dry run write nothing, a real run copies, a
// second one finds nothing to do, and the imported data directory serves
// the same documents with the same credentials.
func TestImportCommand(t *testing.T) {
	srcDir := t.TempDir()
	src := startServe(t, srcDir)
	creds := credentials(t, srcDir)
	svc := creds[envServiceSID]
	call := func(base, method, path string, form url.Values) (int, map[string]any) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+"/v1/Services/"+svc+path, body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(creds[envAPIKey], creds[envAPISecret])
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	for i := range 20 {
		code, m := call(src.base, http.MethodPost, "/Documents", url.Values{"UniqueName": {fmt.Sprintf("doc %d ✓", i)}, "Data": {fmt.Sprintf(`{"i":%d}`, i)}, "Ttl": {"7200"}})
		if code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, m)
		}
	}

	dst := filepath.Join(t.TempDir(), "imported")
	env := cleanEnv(envAccountSID+"="+creds[envAccountSID], envAPIKey+"="+creds[envAPIKey], envAPISecret+"="+creds[envAPISecret])

	// Wrong credentials: one line, its own exit code, nothing written.
	badEnv := cleanEnv(envAccountSID+"="+creds[envAccountSID], envAuthToken+"=wrong")
	_, errOut, code := chorusCmd(t, badEnv, "import", "--from", src.base, "--data-dir", dst)
	if code != exitCredentials || !strings.Contains(errOut, "refused the credentials") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("import with a wrong auth token: exit %d, stderr %q; want exit %d and one line", code, errOut, exitCredentials)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a refused import created %s: %v", dst, err)
	}

	out, errOut, code := chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run") || !strings.Contains(out, "20 new") {
		t.Errorf("dry run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a dry run created %s: %v", dst, err)
	}

	var rep struct {
		Objects struct{ Created, Unchanged int }
		Error   string
	}
	out, errOut, code = chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--json")
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Objects.Created != 20 {
		t.Fatalf("import --json: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(errOut, "objects/s") {
		t.Errorf("progress drawn on a non-terminal stderr: %q", errOut)
	}
	out, _, code = chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--json")
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Objects.Created != 0 || rep.Objects.Unchanged != 20 {
		t.Errorf("second import: exit %d, stdout %q", code, out)
	}
	// --data-dir on the command line wins over CHORUS_STORE_URL in the
	// environment (it wrote into PostgreSQL, and the summary did not say
	// where); --store and --data-dir together name two targets.
	withPG := append(slices.Clone(env), "CHORUS_STORE_URL=postgres://127.0.0.1:1/none")
	out, errOut, code = chorusCmd(t, withPG, "import", "--from", src.base, "--data-dir", dst)
	if code != 0 || !strings.Contains(out, "into SQLite "+filepath.Join(dst, server.DBFile)) || !strings.Contains(out, "20 unchanged") {
		t.Errorf("import --data-dir with CHORUS_STORE_URL set: exit %d, stdout %q, stderr %q; want the data directory", code, out, errOut)
	}
	if _, errOut, code = chorusCmd(t, withPG, "import", "--from", src.base, "--data-dir", dst, "--store", "postgres://127.0.0.1:1/none"); code != exitUsage || !strings.Contains(errOut, "two targets") {
		t.Errorf("import --data-dir --store: exit %d, stderr %q; want a usage error", code, errOut)
	}
	// A run that fails before it begins (no such service) prints no
	// summary of nothing ("import of account  in 0.0s").
	out, errOut, code = chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--service", "nosuch")
	if code == 0 || strings.Contains(out, "import of account") || errOut == "" {
		t.Errorf("import --service nosuch: exit %d, stdout %q, stderr %q; want an error and no summary", code, out, errOut)
	}

	// A dry run into a database of an older schema leaves it as it was:
	// opening it would upgrade it, so the dry run reads an upgraded
	// snapshot. The database is taken back one version (6: the operator's
	// credentials) by hand.
	dbPath := filepath.Join(dst, server.DBFile)
	schemaVersion := func() int {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v int
		if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	current := schemaVersion()
	downgrade := func() {
		t.Helper()
		old, err := sql.Open("sqlite", "file:"+dbPath)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		for _, q := range []string{
			`DROP TABLE console_signouts`, // the latest migration's
			fmt.Sprintf(`PRAGMA user_version = %d`, current-1),
		} {
			if _, err := old.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	downgrade()
	out, errOut, code = chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run") || !strings.Contains(out, "20 unchanged") {
		t.Errorf("dry run into an older schema: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if v := schemaVersion(); v != current-1 {
		t.Errorf("the dry run upgraded the target's schema to version %d (was %d)", v, current-1)
	}
	if left, _ := filepath.Glob(filepath.Join(dst, ".chorus-snapshot-*")); len(left) != 0 {
		t.Errorf("the dry run left %v", left)
	}

	// The imported directory serves the documents under the source's SIDs
	// with the source's API key (imported with the account).
	dstSrv := startServe(t, dst)
	code, want := call(src.base, http.MethodGet, "/Documents/"+url.PathEscape("doc 7 ✓"), nil)
	if code != http.StatusOK {
		t.Fatalf("source GET: %d", code)
	}
	code, got := call(dstSrv.base, http.MethodGet, "/Documents/"+url.PathEscape("doc 7 ✓"), nil)
	if code != http.StatusOK {
		t.Fatalf("target GET: %d %v", code, got)
	}
	for _, f := range []string{"sid", "unique_name", "revision", "data", "date_created", "date_updated", "date_expires", "created_by"} {
		if fmt.Sprint(want[f]) != fmt.Sprint(got[f]) {
			t.Errorf("%s: target %v, source %v", f, got[f], want[f])
		}
	}

	// Grow into PostgreSQL: copy the imported directory, then again (nothing to do).
	// The directory is of the previous schema (its server, of the previous
	// version, may still serve it): the copy reads it without upgrading it.
	dstSrv.stop(t)
	downgrade()
	// A run killed while reading a snapshot left it, a whole copy of the
	// database, in the node's data directory: the next run removes it once
	// untouched for an hour, and leaves a recent one (a run going on) alone.
	killed, running := filepath.Join(dst, ".chorus-snapshot-killed"), filepath.Join(dst, ".chorus-snapshot-running")
	for _, d := range []string{killed, running} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if long := time.Now().Add(-2 * time.Hour); os.Chtimes(killed, long, long) != nil {
		t.Fatal("chtimes")
	}
	dsn := servertest.NewDatabase(t)
	for i, want := range []int{20, 0} {
		out, errOut, code := chorusCmd(t, cleanEnv(), "migrate", "--store", dsn, "--from-data-dir", dst, "--json")
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Objects.Created != want || !strings.Contains(errOut, "schema up to date") {
			t.Errorf("migrate --from-data-dir run %d: exit %d, stdout %q, stderr %q; want %d created", i+1, code, out, errOut, want)
		}
		if strings.Contains(errOut, "webhooks") {
			t.Errorf("migrate --from-data-dir run %d warned of webhooks with none pending: %q", i+1, errOut)
		}
	}
	if v := schemaVersion(); v != current-1 {
		t.Errorf("migrate --from-data-dir upgraded the source's schema to version %d (was %d)", v, current-1)
	}
	if left, _ := filepath.Glob(filepath.Join(dst, ".chorus-snapshot-*")); len(left) != 1 || left[0] != running {
		t.Errorf("after migrate --from-data-dir: %v, want only the running run's snapshot", left)
	}
	os.RemoveAll(running)
	// A webhook the old node never delivered is not copied: the copy says so.
	st, err := sqlite.Open(context.Background(), filepath.Join(dst, server.DBFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	err = st.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.AppendOutbox(context.Background(), &chorus.OutboxEntry{ServiceSID: creds[envServiceSID], OrderKey: "ET0", DateCreated: now, NextAttempt: now,
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ID: 1, ServiceSID: creds[envServiceSID], ObjectSID: "ET0", Kind: chorus.KindDocument, DateCreated: now}})
	})
	if cerr := st.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "migrate", "--store", dsn, "--from-data-dir", dst); code != 0 || !strings.Contains(errOut, "1 webhooks of 1 services were still waiting") {
		t.Errorf("migrate with a pending webhook: exit %d, stderr %q; want a warning", code, errOut)
	}

	// Usage errors.
	for _, args := range [][]string{
		{"import", "--from", "ftp://x", "--data-dir", dst},
		{"import", "--from", src.base + "/v1", "--data-dir", dst},
		{"import", "--from", src.base, "--concurrency", "0"},
		{"import", "--from", src.base, "--service", "", "--data-dir", dst},    // an unset variable: not every service
		{"import", "--from", src.base, "--service", " , ", "--data-dir", dst}, // the same
	} {
		if _, errOut, code := chorusCmd(t, env, args...); code != exitUsage {
			t.Errorf("chorus %v: exit %d (%s), want %d", args, code, errOut, exitUsage)
		}
	}
	// Credentials in --from are refused and not printed back, however
	// the URL parses.
	for _, userinfo := range []string{"user:SecretInURL9@", "SecretInURL9@", "user:123/SecretInURL9@"} {
		withSecret := strings.Replace(src.base, "://", "://"+userinfo, 1)
		if _, errOut, code := chorusCmd(t, env, "import", "--from", withSecret, "--data-dir", dst); code != exitUsage || strings.Contains(errOut, "SecretInURL9") {
			t.Errorf("import --from %s…: exit %d, stderr %q; want %d without the secret", userinfo, code, errOut, exitUsage)
		}
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "import", "--from", src.base); code != exitUsage || !strings.Contains(errOut, "no source credentials") {
		t.Errorf("import without credentials: exit %d, %q", code, errOut)
	}
}

// TestImportKilledAndRerun SIGKILLs `chorus import` half way and checks
// that running it again converges: every document and map item of the
// source is in the target, with the source's fields.
func TestImportKilledAndRerun(t *testing.T) {
	srcDir := t.TempDir()
	src := startServe(t, srcDir)
	creds := credentials(t, srcDir)
	svc := creds[envServiceSID]
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(base, method, path string, form url.Values) (int, map[string]any) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, _ := http.NewRequest(method, base+"/v1/Services/"+svc+path, body)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(creds[envAPIKey], creds[envAPISecret])
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	const docs, maps, items = 400, 4, 150
	for i := range docs {
		if code, m := call(src.base, http.MethodPost, "/Documents", url.Values{"UniqueName": {fmt.Sprintf("d %d é", i)}, "Data": {fmt.Sprintf(`{"i":%d}`, i)}}); code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, m)
		}
	}
	for i := range maps {
		name := fmt.Sprintf("m %d", i)
		if code, m := call(src.base, http.MethodPost, "/Maps", url.Values{"UniqueName": {name}}); code != http.StatusCreated {
			t.Fatalf("create map: %d %v", code, m)
		}
		for j := range items {
			if code, m := call(src.base, http.MethodPost, "/Maps/"+url.PathEscape(name)+"/Items", url.Values{"Key": {fmt.Sprintf("k %d", j)}, "Data": {`{"x":1}`}}); code != http.StatusCreated {
				t.Fatalf("create item: %d %v", code, m)
			}
		}
	}

	dst := filepath.Join(t.TempDir(), "imported")
	env := cleanEnv(envAccountSID+"="+creds[envAccountSID], envAPIKey+"="+creds[envAPIKey], envAPISecret+"="+creds[envAPISecret])
	cmd := exec.Command(binary, "import", "--from", src.base, "--data-dir", dst, "--concurrency", "1")
	cmd.Env = env
	var errb logtest.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	// Kill it once some objects, not all, are in the target.
	countObjects := func() int {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dst, server.DBFile)+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			return 0
		}
		defer db.Close()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM objects`).Scan(&n); err != nil {
			return 0
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for countObjects() < 20 {
		select {
		case <-exited:
			t.Fatalf("import finished before it could be killed (stderr %q); make the source larger", errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("import wrote nothing in 60s: %s", errb.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	killedAt := countObjects()
	if killedAt >= docs+maps {
		t.Fatalf("import had copied all %d objects when killed", killedAt)
	}

	out, errOut, code := chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--json")
	var rep struct {
		Objects, Items struct{ Created, Updated, Unchanged int }
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("re-run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got := rep.Objects.Created + rep.Objects.Updated + rep.Objects.Unchanged; got != docs+maps || rep.Objects.Created == 0 {
		t.Errorf("re-run after the kill at %d objects: %+v, want all %d objects, some new", killedAt, rep.Objects, docs+maps)
	}
	t.Logf("killed at %d objects; the re-run created %d and updated %d objects, created %d items",
		killedAt, rep.Objects.Created, rep.Objects.Updated, rep.Items.Created)

	dstSrv := startServe(t, dst)
	compare := func(path, key, id string) {
		t.Helper()
		list := func(base string) map[string]string {
			out := map[string]string{}
			_, m := call(base, http.MethodGet, path+"?PageSize=1000", nil)
			for _, e := range m[key].([]any) {
				o := e.(map[string]any)
				delete(o, "url")
				delete(o, "links")
				b, _ := json.Marshal(o)
				out[fmt.Sprint(o[id])] = string(b)
			}
			return out
		}
		want, got := list(src.base), list(dstSrv.base)
		if len(want) == 0 || len(want) != len(got) {
			t.Errorf("%s: %d in the source, %d in the target", path, len(want), len(got))
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s %s:\n source %s\n target %s", path, k, w, got[k])
			}
		}
	}
	compare("/Documents", "documents", "sid")
	compare("/Maps", "maps", "sid")
	for i := range maps {
		compare("/Maps/"+url.PathEscape(fmt.Sprintf("m %d", i))+"/Items", "items", "key")
	}
}

// TestImportOneAtATime: a copy into a target another copy is writing into
// stops at once, saying so, instead of refusing the other's writes as
// conflicts (two imports at once each listed dozens of "conflicts" and
// exited 4); it runs once the other is done. Embedded store and
// PostgreSQL.
func TestImportOneAtATime(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	src := startServe(t, srcDir)
	creds := credentials(t, srcDir)
	env := cleanEnv(envAccountSID+"="+creds[envAccountSID], envAPIKey+"="+creds[envAPIKey], envAPISecret+"="+creds[envAPISecret])
	dst := filepath.Join(t.TempDir(), "target")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockImport(ctx, nil, dst)
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code := chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst)
	if code != exitError || !strings.Contains(errOut, "another chorus import or migrate is copying into this data directory") {
		t.Errorf("import while another holds the target: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst, "--dry-run"); code != 0 {
		t.Errorf("a dry run while another import holds the target: exit %d, stderr %q; want it to run", code, errOut)
	}
	unlock()
	if _, errOut, code := chorusCmd(t, env, "import", "--from", src.base, "--data-dir", dst); code != 0 {
		t.Fatalf("import after the other ended: exit %d, stderr %q", code, errOut)
	}

	dsn := servertest.NewDatabase(t)
	other, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.LockImport(ctx); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = chorusCmd(t, cleanEnv(), "migrate", "--store", dsn, "--from-data-dir", dst)
	if code != exitError || !strings.Contains(errOut, "another chorus import or migrate is copying into this database") {
		t.Errorf("migrate while another holds the database: exit %d, stderr %q", code, errOut)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "migrate", "--store", dsn, "--from-data-dir", dst); code != 0 {
		t.Errorf("migrate after the other ended: exit %d, stderr %q", code, errOut)
	}
}

// TestMigrateAfterRestore: migrate --after-restore moves a restored
// database's event ids up and says by how much.
func TestMigrateAfterRestore(t *testing.T) {
	dsn := servertest.NewDatabase(t)
	out, errOut, code := chorusCmd(t, cleanEnv(), "migrate", "--store", dsn, "--after-restore")
	if code != 0 || !regexp.MustCompile(`event ids moved up to [1-9][0-9]{15,} and above`).MatchString(out) {
		t.Errorf("migrate --after-restore: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
