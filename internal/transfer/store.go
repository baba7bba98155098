package transfer

import (
	"context"
	"fmt"
	"time"

	"github.com/chorus-sync/chorus"
)

// StoreReader reads another store directly (`chorus migrate
// --from-data-dir`): every account with its API keys and services, and
// what REST does not show (millisecond dates, list context, the next list
// index). The source should not be written meanwhile (stop its server):
// each call but Objects and Items, which read a page at a time, reads one
// consistent snapshot.
type StoreReader struct {
	Store chorus.Store
	Now   func() time.Time // hides what expired; default time.Now
	// PageSize is how many objects or items one read of Objects or Items
	// takes; default 1000.
	PageSize int
}

func (r *StoreReader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *StoreReader) pageSize() int {
	if r.PageSize > 0 {
		return r.PageSize
	}
	return 1000
}

// Check pings the store.
func (r *StoreReader) Check(ctx context.Context) error {
	if err := r.Store.Ping(ctx); err != nil {
		return fmt.Errorf("transfer: source store: %w", err)
	}
	return nil
}

// DatePrecision is a store's: dates to the millisecond.
func (r *StoreReader) DatePrecision() time.Duration { return time.Millisecond }

// Requests is zero: a store has no requests to count.
func (r *StoreReader) Requests() (sent, retried int64) { return 0, 0 }

// Credentials returns every account and API key.
func (r *StoreReader) Credentials(ctx context.Context) (accts []*chorus.Account, keys []*chorus.APIKey, err error) {
	err = r.Store.View(ctx, func(tx chorus.ReadTx) error {
		if accts, err = tx.Accounts(ctx); err != nil {
			return err
		}
		for _, a := range accts {
			ks, err := tx.APIKeys(ctx, a.SID)
			if err != nil {
				return err
			}
			keys = append(keys, ks...)
		}
		return nil
	})
	return accts, keys, err
}

// Services returns the services of every account.
func (r *StoreReader) Services(ctx context.Context) (out []*chorus.Service, err error) {
	err = r.Store.View(ctx, func(tx chorus.ReadTx) error {
		accts, err := tx.Accounts(ctx)
		if err != nil {
			return err
		}
		for _, a := range accts {
			svcs, err := tx.Services(ctx, a.SID, chorus.ObjectQuery{})
			if err != nil {
				return err
			}
			out = append(out, svcs...)
		}
		return nil
	})
	return out, err
}

// Objects calls fn with the service's live objects of kind k, PageSize
// at a time (each page one snapshot; fn runs outside it).
func (r *StoreReader) Objects(ctx context.Context, svc *chorus.Service, k chorus.Kind, fn func(*chorus.Object) error) error {
	size := r.pageSize()
	q := chorus.ObjectQuery{Limit: size, Now: r.now()}
	for {
		var page []*chorus.Object
		err := r.Store.View(ctx, func(tx chorus.ReadTx) error {
			var err error
			page, err = tx.Objects(ctx, k, svc.SID, q)
			return err
		})
		if err != nil {
			return err
		}
		for _, o := range page {
			if err := fn(o); err != nil {
				return err
			}
		}
		if len(page) < size {
			return nil
		}
		last := page[len(page)-1]
		q.After = chorus.Cursor{DateCreated: last.DateCreated, SID: last.SID}
	}
}

// Items calls fn with the object's live items in the store's index or key
// order, PageSize at a time (each page one snapshot; fn runs outside it).
func (r *StoreReader) Items(ctx context.Context, obj *chorus.Object, fn func([]*chorus.Item) error) error {
	size := r.pageSize()
	q := chorus.ItemQuery{Kind: obj.Kind, Limit: size, Now: r.now()}
	for {
		var page []*chorus.Item
		err := r.Store.View(ctx, func(tx chorus.ReadTx) error {
			var err error
			page, err = tx.Items(ctx, obj.SID, q)
			return err
		})
		if err != nil {
			return err
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return err
			}
		}
		if len(page) < size {
			return nil
		}
		last := page[len(page)-1]
		q.HasFrom, q.FromIndex, q.FromKey = true, last.Index, last.Key
	}
}

// Permissions returns the object's permissions.
func (r *StoreReader) Permissions(ctx context.Context, obj *chorus.Object) (out []*chorus.Permission, err error) {
	err = r.Store.View(ctx, func(tx chorus.ReadTx) error {
		out, err = tx.Permissions(ctx, obj.SID, chorus.PermissionQuery{})
		return err
	})
	return out, err
}
