package transfer_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// TestImportChecksStoredData: a store source (chorus migrate) is copied
// below the engine, so the import checks data as the engine checks a
// write's: data that is not JSON, or not valid UTF-8, is refused, and valid
// data arrives compacted, as every write path stores it (the REST and CDS
// answers copy stored data as it is).
func TestImportChecksStoredData(t *testing.T) {
	ctx := context.Background()
	src, _ := openSQLite(t)
	defer src.Close()
	bus := mem.New()
	defer bus.Close()
	creds, _, err := engine.New(engine.Config{Store: src, Bus: bus}).Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	doc := func(data string) *chorus.Object {
		return &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: creds.AccountSID,
			ServiceSID: creds.ServiceSID, Data: json.RawMessage(data), LastEventID: 1, CreatedBy: "system", DateCreated: now, DateUpdated: now}
	}
	spaced := doc("{ \"a\" : [1, 2],\n \"b\" : \"x y\" }")
	broken, badUTF8 := doc(`{"a":`), doc("{\"a\":\"\xff\"}")
	m := &chorus.Object{Kind: chorus.KindMap, SID: chorus.NewSID(chorus.PrefixMap), AccountSID: creds.AccountSID,
		ServiceSID: creds.ServiceSID, UniqueName: "m", NextIndex: 1, LastEventID: 1, CreatedBy: "system", DateCreated: now, DateUpdated: now}
	item := &chorus.Item{Kind: chorus.KindMap, ObjectSID: m.SID, Key: "k", Data: json.RawMessage("{ \"c\" : true }"),
		LastEventID: 1, CreatedBy: "system", DateCreated: now, DateUpdated: now}
	err = src.Update(ctx, func(tx chorus.Tx) error {
		for _, o := range []*chorus.Object{spaced, broken, badUTF8, m} {
			if err := tx.InsertObject(ctx, o); err != nil {
				return err
			}
		}
		return tx.PutItem(ctx, item)
	})
	if err != nil {
		t.Fatal(err)
	}

	dst, _ := openSQLite(t)
	defer dst.Close()
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, transfer.Options{})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	refused := map[string]string{}
	for _, c := range rep.Conflicts {
		refused[c.SID] = c.Reason
	}
	if rep.Objects.Refused != 2 || !strings.Contains(refused[broken.SID], "not valid JSON") || !strings.Contains(refused[badUTF8.SID], "not valid JSON") {
		t.Errorf("refused %d: %v; want %s and %s, not valid JSON", rep.Objects.Refused, refused, broken.SID, badUTF8.SID)
	}
	err = dst.View(ctx, func(tx chorus.ReadTx) error {
		o, err := tx.Object(ctx, chorus.KindDocument, creds.ServiceSID, spaced.SID)
		if err != nil {
			return err
		}
		if got, want := string(o.Data), `{"a":[1,2],"b":"x y"}`; got != want {
			t.Errorf("imported document data %s, want %s", got, want)
		}
		it, err := tx.Item(ctx, m.SID, chorus.ItemRef{Key: "k"})
		if err != nil {
			return err
		}
		if got, want := string(it.Data), `{"c":true}`; got != want {
			t.Errorf("imported item data %s, want %s", got, want)
		}
		for _, o := range []*chorus.Object{broken, badUTF8} {
			if _, err := tx.Object(ctx, chorus.KindDocument, creds.ServiceSID, o.SID); !errors.Is(err, chorus.ErrNotFound) {
				t.Errorf("refused document %s in the target: %v", o.SID, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
