'use strict';
// Live authorization: a subscription that is already live ends when the identity loses read access
// (permission deleted or downgraded through REST, or ACLs turned on for the service). The SDK reports
// it with a 'failure' event (SyncError 403 / 54007) and receives no more updates; once read is granted
// again, reopening the object subscribes again and updates flow. A live query (client.liveQuery over a
// Map) follows its Map's read access the same way: the SDK emits 'failure' on the LiveQuery (an event it
// does not document, see SDK-NOTES.md) and no more itemUpdated/itemRemoved.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor, sleep } = require('../lib/harness');
const { uniq, tap, connect, record, established, expectReject } = require('./util');

tap.install();
const srv = useServer({ name: 'acl-live' });

const DENIAL_MS = 10000; // the bound: it takes milliseconds; generous for a loaded machine
const rest = () => srv.restClient().sync.v1.services(srv.creds.serviceSid);
const RO = { read: true, write: false, manage: false };

/** Wait for the 'failure' the SDK emits for a withdrawn subscription; assert 403 / 54007. */
async function expectDenied(entity) {
  const err = await waitFor(entity, 'failure', () => true, DENIAL_MS);
  assert.equal(err.status, 403, `failure status (${err.message})`);
  assert.equal(err.code, 54007, `failure code (${err.message})`);
}

/** After a denial: a write through REST produces no event within a while. */
async function expectNoUpdates(entity, event, write) {
  const rec = record(entity, event);
  await write();
  await sleep(1000);
  rec.stop();
  assert.deepEqual(rec.events, [], `${event} after the subscription was denied`);
}

// Runs first: the service starts with ACLs off.
test('maps: turning ACLs on ends a subscription without permission; a grant and reopen restore it', async () => {
  const map = await rest().syncMaps.create({ uniqueName: uniq('live-map') });
  const who = uniq('mapper');
  const c = await connect(srv, who);
  const since = Date.now();
  const m = await c.map({ id: map.sid, mode: 'open_existing' });
  await established(c, map.sid, { since });
  const live = waitFor(m, 'itemAdded', (e) => e.item.key === 'a', DENIAL_MS);
  await rest().syncMaps(map.sid).syncMapItems.create({ key: 'a', data: { v: 1 } });
  await live;

  const denied = expectDenied(m);
  const s = await rest().update({ aclEnabled: true });
  assert.equal(s.aclEnabled, true);
  await denied;
  await expectNoUpdates(m, 'itemAdded', () => rest().syncMaps(map.sid).syncMapItems.create({ key: 'b', data: { v: 2 } }));

  await rest().syncMaps(map.sid).syncMapPermissions(who).update(RO);
  m.close();
  const m2 = await c.map({ id: map.sid, mode: 'open_existing' });
  const again = waitFor(m2, 'itemAdded', (e) => e.item.key === 'c', DENIAL_MS);
  await rest().syncMaps(map.sid).syncMapItems.create({ key: 'c', data: { v: 3 } });
  await again;
});

test('documents: deleting the read permission ends the live subscription; granting again restores it', async () => {
  const doc = await rest().documents.create({ uniqueName: uniq('live-doc'), data: { n: 0 } });
  const reader = uniq('reader');
  const other = uniq('other');
  await rest().documents(doc.sid).documentPermissions(reader).update(RO);
  await rest().documents(doc.sid).documentPermissions(other).update(RO);
  const cr = await connect(srv, reader);
  const co = await connect(srv, other);
  const d = await cr.document({ id: doc.sid, mode: 'open_existing' });
  const dOther = await co.document({ id: doc.sid, mode: 'open_existing' });
  const live = waitFor(d, 'updated', (e) => e.data.n === 1, DENIAL_MS);
  await rest().documents(doc.sid).update({ data: { n: 1 } });
  await live;

  const t0 = Date.now();
  const denied = expectDenied(d);
  await rest().documents(doc.sid).documentPermissions(reader).remove();
  await denied;
  const took = Date.now() - t0;
  assert.ok(took < DENIAL_MS, `denial after ${took} ms`);

  // The other reader is unaffected; the denied one hears nothing more.
  const otherSees = waitFor(dOther, 'updated', (e) => e.data.n === 2, DENIAL_MS);
  await expectNoUpdates(d, 'updated', () => rest().documents(doc.sid).update({ data: { n: 2 } }));
  await otherSees;
  const frames = tap.socketsForAny([cr.__token]).flatMap((s) => s.notifications((p) =>
    p.event_type === 'document_updated' && p.event && p.event.document_sid === doc.sid && p.event.document_data.n === 2));
  assert.deepEqual(frames, [], 'no document_updated reached the denied socket');

  await rest().documents(doc.sid).documentPermissions(reader).update(RO);
  d.close();
  const d2 = await cr.document({ id: doc.sid, mode: 'open_existing' });
  assert.deepEqual(d2.data, { n: 2 });
  const again = waitFor(d2, 'updated', (e) => e.data.n === 3, DENIAL_MS);
  await rest().documents(doc.sid).update({ data: { n: 3 } });
  await again;
});

test('lists: downgrading the permission to no read ends the live subscription', async () => {
  const list = await rest().syncLists.create({ uniqueName: uniq('live-list') });
  const reader = uniq('lreader');
  await rest().syncLists(list.sid).syncListPermissions(reader).update(RO);
  const c = await connect(srv, reader);
  const l = await c.list({ id: list.sid, mode: 'open_existing' });
  const live = waitFor(l, 'itemAdded', (e) => e.item.data.i === 0, DENIAL_MS);
  await rest().syncLists(list.sid).syncListItems.create({ data: { i: 0 } });
  await live;

  const denied = expectDenied(l);
  await rest().syncLists(list.sid).syncListPermissions(reader).update({ read: false, write: true, manage: false });
  await denied;
  await expectNoUpdates(l, 'itemAdded', () => rest().syncLists(list.sid).syncListItems.create({ data: { i: 1 } }));

  await rest().syncLists(list.sid).syncListPermissions(reader).update(RO);
  l.close();
  const l2 = await c.list({ id: list.sid, mode: 'open_existing' });
  const again = waitFor(l2, 'itemAdded', (e) => e.item.data.i === 2, DENIAL_MS);
  await rest().syncLists(list.sid).syncListItems.create({ data: { i: 2 } });
  await again;
});

test('liveQuery: losing read on the Map ends the live query with a failure; a grant and a new liveQuery restore it', async () => {
  const name = uniq('live-q');
  const map = await rest().syncMaps.create({ uniqueName: name });
  const reader = uniq('qreader');
  const other = uniq('qother');
  await rest().syncMaps(map.sid).syncMapPermissions(reader).update(RO);
  await rest().syncMaps(map.sid).syncMapPermissions(other).update(RO);
  const items = rest().syncMaps(map.sid).syncMapItems;
  await items.create({ key: 'a', data: { s: 'open' } });
  const cr = await connect(srv, reader);
  const co = await connect(srv, other);
  const expr = 'data.s == "open"';
  const q = await cr.liveQuery(name, expr);
  const qOther = await co.liveQuery(name, expr);
  assert.deepEqual(q.getItems(), { a: { s: 'open' } });
  await established(cr, q.sid);
  await established(co, qOther.sid);
  const live = waitFor(q, 'itemUpdated', (it) => it.key === 'b', DENIAL_MS);
  await items.create({ key: 'b', data: { s: 'open' } });
  await live;

  const t0 = Date.now();
  const denied = expectDenied(q);
  await rest().syncMaps(map.sid).syncMapPermissions(reader).remove();
  await denied;
  const took = Date.now() - t0;
  assert.ok(took < DENIAL_MS, `denial after ${took} ms`);

  const otherSees = waitFor(qOther, 'itemUpdated', (it) => it.key === 'c', DENIAL_MS);
  await expectNoUpdates(q, 'itemUpdated', () => items.create({ key: 'c', data: { s: 'open' } }));
  await otherSees;
  const frames = tap.socketsForAny([cr.__token]).flatMap((s) => s.notifications((p) =>
    typeof p.event_type === 'string' && p.event_type.startsWith('live_query_') && p.event && p.event.item_key === 'c'));
  assert.deepEqual(frames, [], 'no live query event reached the denied socket');
  await expectReject(cr.liveQuery(name, expr), { status: 403, code: 54007 });

  await rest().syncMaps(map.sid).syncMapPermissions(reader).update(RO);
  q.close();
  const q2 = await cr.liveQuery(name, expr);
  assert.deepEqual(Object.keys(q2.getItems()).sort(), ['a', 'b', 'c']);
  const again = waitFor(q2, 'itemUpdated', (it) => it.key === 'd', DENIAL_MS);
  await items.create({ key: 'd', data: { s: 'open' } });
  await again;
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
