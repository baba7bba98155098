package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func TestZZFrames(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: "t", DateCreated: time.Now()}
	svc := &chorus.Service{SID: chorus.NewSID(chorus.PrefixService), AccountSID: acc.SID, DateCreated: time.Now(), DateUpdated: time.Now()}
	docs := make([]*chorus.Object, 32)
	for i := range docs {
		docs[i] = &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: acc.SID, ServiceSID: svc.SID, UniqueName: fmt.Sprintf("d%d", i), Data: json.RawMessage(`{}`), CreatedBy: "b", DateCreated: time.Now(), DateUpdated: time.Now()}
	}
	s.Update(ctx, func(tx chorus.Tx) error {
		tx.PutAccount(ctx, acc)
		tx.PutService(ctx, svc)
		for _, d := range docs {
			tx.InsertObject(ctx, d)
		}
		return nil
	})
	s.writer.exec(ctx, "PRAGMA wal_autocheckpoint=0")
	frames := func() int {
		var a, b, c int
		s.ckpt.c.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&a, &b, &c)
		return b
	}
	for round := 0; round < 3; round++ {
		f0 := frames()
		var wg sync.WaitGroup
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < 50; k++ {
					s.Update(ctx, func(tx chorus.Tx) error {
						o, err := tx.Object(ctx, chorus.KindDocument, svc.SID, docs[i].SID)
						if err != nil {
							return err
						}
						o.Revision++
						o.LastEventID++
						o.Data = json.RawMessage(`{"title":"Quarterly report","status":"in review","owner":"alice","tags":["q3","finance"],"n":42}`)
						if err := tx.UpdateObject(ctx, o); err != nil {
							return err
						}
						return tx.AppendEvent(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: o.LastEventID, AccountSID: o.AccountSID, ServiceSID: o.ServiceSID, ObjectSID: o.SID, Kind: o.Kind, UniqueName: o.UniqueName, Revision: o.RevisionString(), Data: o.Data, DateCreated: time.Now(), Identity: "bench"})
					})
				}
			}()
		}
		b0, _, _ := s.BatchStats()
		wg.Wait()
		b1, _, _ := s.BatchStats()
		f1 := frames()
		t.Logf("round %d: batches %d frames %d  frames/batch %.1f frames/write %.2f", round, b1-b0, f1-f0, float64(f1-f0)/float64(b1-b0), float64(f1-f0)/1600)
	}
}
