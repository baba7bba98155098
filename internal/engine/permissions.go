package engine

import (
	"context"

	"github.com/chorus-sync/chorus"
)

// permissionTarget finds the document, list or map a permission belongs to.
func (e *Engine) permissionTarget(ctx context.Context, tx chorus.ReadTx, svc *chorus.Service, k chorus.Kind, objectID string) (*chorus.Object, error) {
	if k == chorus.KindStream {
		return nil, chorus.ErrNotFound
	}
	return e.lookup(ctx, tx, svc, k, objectID)
}

// Permission returns an identity's permission on an object (54354 when
// none is set).
func (e *Engine) Permission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID, identity string) (*chorus.Permission, error) {
	if err := validIdentity(identity); err != nil {
		return nil, err
	}
	var p *chorus.Permission
	err := e.view(ctx, func(tx chorus.ReadTx) error {
		obj, err := e.permissionTarget(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		p, err = tx.Permission(ctx, obj.SID, identity)
		return notFoundAs(err, chorus.ErrPermissionNotFound)
	})
	return p, err
}

// Permissions pages an object's permissions, by identity.
func (e *Engine) Permissions(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID string, p PageRequest) (Page[*chorus.Permission], error) {
	var page Page[*chorus.Permission]
	size, err := pageSize(p.PageSize)
	if err != nil {
		return page, err
	}
	var at identityToken
	if p.Token != "" {
		if err := decodeToken(p.Token, &at); err != nil {
			return page, err
		}
	}
	err = e.view(ctx, func(tx chorus.ReadTx) error {
		obj, err := e.permissionTarget(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		if !inScope(at.K, obj.SID) {
			return chorus.Errorf(chorus.ErrInvalidPageToken, "Invalid PageToken: it pages another listing")
		}
		ks := keyset[*chorus.Permission, string]{
			fetch: func(after string, backward bool, limit int) ([]*chorus.Permission, error) {
				return tx.Permissions(ctx, obj.SID, chorus.PermissionQuery{After: after, Backward: backward, Limit: limit})
			},
			key:   func(p *chorus.Permission) string { return p.Identity },
			token: identityTokens(obj.SID),
		}
		page, err = ks.page(size, at.I, at.B, p.Token != "")
		return err
	})
	if err != nil {
		return Page[*chorus.Permission]{}, err
	}
	return page, nil
}

// SetPermission upserts an identity's permission on an object.
func (e *Engine) SetPermission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID string, p chorus.Permission) (*chorus.Permission, error) {
	if err := validIdentity(p.Identity); err != nil {
		return nil, err
	}
	err := e.update(ctx, SystemActor(), func(tx chorus.Tx, c *change) error {
		obj, err := e.permissionTarget(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		p.ObjectSID = obj.SID
		return tx.PutPermission(ctx, &p)
	})
	if err != nil {
		return nil, err
	}
	e.publishPermission(ctx, svc, k, p.ObjectSID, p.Identity)
	return &p, nil
}

// DeletePermission removes an identity's permission on an object (54354
// when none is set).
func (e *Engine) DeletePermission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID, identity string) error {
	if err := validIdentity(identity); err != nil {
		return err
	}
	var objectSID string
	err := e.update(ctx, SystemActor(), func(tx chorus.Tx, c *change) error {
		obj, err := e.permissionTarget(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		if _, err := tx.Permission(ctx, obj.SID, identity); err != nil {
			return notFoundAs(err, chorus.ErrPermissionNotFound)
		}
		objectSID = obj.SID
		return tx.DeletePermission(ctx, obj.SID, identity)
	})
	if err != nil {
		return err
	}
	e.publishPermission(ctx, svc, k, objectSID, identity)
	return nil
}

// publishPermission announces a committed permission change on the
// object's Bus topic, where the gateways that have subscribers to it
// listen.
func (e *Engine) publishPermission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectSID, identity string) {
	e.publishAccess(ctx, &chorus.Event{
		Type: chorus.EventPermissionChanged, AccountSID: svc.AccountSID, ServiceSID: svc.SID,
		ObjectSID: objectSID, Kind: k, Identity: identity,
	})
}
