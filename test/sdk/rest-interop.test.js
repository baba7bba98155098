'use strict';
// REST v1 (official `twilio` Node helper) ↔ SDK: writes through REST reach SDK subscribers, and
// objects written by the SDK are visible through REST (checklist 46).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor } = require('../lib/harness');
const { uniq, tap, connect, record, until, established } = require('./util');

tap.install();
const srv = useServer({ name: 'rest' });
let svcCache = null;
// the twilio REST client for the service (created lazily: the server starts in useServer's hook)
const rest = () => (svcCache = svcCache || srv.restClient().sync.v1.services(srv.creds.serviceSid));

test('REST document update reaches the SDK subscriber; SDK writes are visible via REST fetch', async () => {
  const c = await connect(srv, uniq('a'));
  const name = uniq('rdoc');
  const created = await rest().documents.create({ uniqueName: name, data: { from: 'rest' } });
  assert.match(created.sid, /^ET[0-9a-f]{32}$/);
  const doc = await c.document({ id: name, mode: 'open_existing' });
  assert.equal(doc.sid, created.sid);
  assert.deepEqual(doc.data, { from: 'rest' });
  const upd = waitFor(doc, 'updated', (e) => e.data.v === 2, 10000);
  const r = await rest().documents(created.sid).update({ data: { v: 2 } });
  assert.deepEqual(r.data, { v: 2 });
  const ev = await upd;
  assert.equal(ev.isLocal, false);
  assert.equal(doc.revision, r.revision, 'SDK revision equals the REST revision');
  // update by unique name too
  const upd2 = waitFor(doc, 'updated', (e) => e.data.v === 3, 10000);
  await rest().documents(name).update({ data: { v: 3 } });
  await upd2;
  // SDK → REST
  await doc.set({ from: 'sdk' });
  const fetched = await rest().documents(created.sid).fetch();
  assert.deepEqual(fetched.data, { from: 'sdk' });
  assert.equal(fetched.revision, doc.revision);
  assert.equal(fetched.uniqueName, name);
  // SDK mutate after a REST write (If-Match path)
  await rest().documents(created.sid).update({ data: { n: 10 } });
  const m = await doc.mutate((v) => ({ n: (v.n || 0) + 1 }));
  assert.deepEqual(m, { n: 11 });
  assert.deepEqual((await rest().documents(created.sid).fetch()).data, { n: 11 });
});

test('an SDK-created anonymous document, list, map and stream are visible via REST', async () => {
  const c = await connect(srv, uniq('a'));
  const d = await c.document({ data: { anon: 1 } });
  const l = await c.list(uniq('sdklist'));
  await l.push({ p: 0 });
  const m = await c.map(uniq('sdkmap'));
  await m.set('k', { mk: 1 });
  const s = await c.stream(uniq('sdkstream'));
  assert.deepEqual((await rest().documents(d.sid).fetch()).data, { anon: 1 });
  const listFetched = await rest().syncLists(l.uniqueName).fetch();
  assert.equal(listFetched.sid, l.sid);
  const items = await rest().syncLists(l.sid).syncListItems.list();
  assert.deepEqual(items.map((i) => [i.index, i.data]), [[0, { p: 0 }]]);
  const mi = await rest().syncMaps(m.sid).syncMapItems('k').fetch();
  assert.deepEqual(mi.data, { mk: 1 });
  const sf = await rest().syncStreams(s.sid).fetch();
  assert.equal(sf.uniqueName, s.uniqueName);
  const docs = await rest().documents.list();
  assert.ok(docs.some((x) => x.sid === d.sid), 'documents list includes the SDK document');
});

test('REST list item create / update / remove reach the SDK as itemAdded / itemUpdated / itemRemoved', async () => {
  const c = await connect(srv, uniq('a'));
  const name = uniq('rlist');
  const list = await c.list(name);
  const add = waitFor(list, 'itemAdded', (e) => e.isLocal === false, 10000);
  const created = await rest().syncLists(list.sid).syncListItems.create({ data: { r: 1 } });
  assert.equal(created.index, 0);
  const ea = await add;
  assert.equal(ea.item.index, 0);
  assert.deepEqual(ea.item.data, { r: 1 });
  const upd = waitFor(list, 'itemUpdated', (e) => e.isLocal === false, 10000);
  await rest().syncLists(name).syncListItems(0).update({ data: { r: 2 } });
  const eu = await upd;
  assert.deepEqual(eu.item.data, { r: 2 });
  assert.deepEqual(eu.previousItemData, { r: 1 });
  // the SDK can now update the item learned from events
  await list.update(0, { s: 1 });
  assert.deepEqual((await rest().syncLists(list.sid).syncListItems(0).fetch()).data, { r: 2, s: 1 });
  const rem = waitFor(list, 'itemRemoved', (e) => e.isLocal === false, 10000);
  await rest().syncLists(list.sid).syncListItems(0).remove();
  const er = await rem;
  assert.equal(er.index, 0);
  assert.deepEqual(er.previousItemData, { r: 2, s: 1 });
  // SDK push → REST
  const pushed = await list.push({ fromSdk: true });
  const f = await rest().syncLists(list.sid).syncListItems(pushed.index).fetch();
  assert.deepEqual(f.data, { fromSdk: true });
});

test('REST map item create / update / remove reach the SDK', async () => {
  const c = await connect(srv, uniq('a'));
  const map = await c.map(uniq('rmap'));
  const add = waitFor(map, 'itemAdded', (e) => e.isLocal === false, 10000);
  await rest().syncMaps(map.sid).syncMapItems.create({ key: 'rk', data: { a: 1 } });
  const ea = await add;
  assert.equal(ea.item.key, 'rk');
  assert.deepEqual(ea.item.data, { a: 1 });
  const upd = waitFor(map, 'itemUpdated', (e) => e.isLocal === false, 10000);
  await rest().syncMaps(map.sid).syncMapItems('rk').update({ data: { a: 2 } });
  assert.deepEqual((await upd).item.data, { a: 2 });
  const m = await map.mutate('rk', (d) => ({ ...d, b: 1 }));
  assert.deepEqual(m.data, { a: 2, b: 1 });
  const rem = waitFor(map, 'itemRemoved', (e) => e.isLocal === false, 10000);
  await rest().syncMaps(map.uniqueName).syncMapItems('rk').remove();
  const er = await rem;
  assert.equal(er.key, 'rk');
  assert.deepEqual(er.previousItemData, { a: 2, b: 1 });
  // SDK set → REST
  await map.set('sk', { s: 1 });
  assert.deepEqual((await rest().syncMaps(map.sid).syncMapItems('sk').fetch()).data, { s: 1 });
});

test('REST stream message create reaches the SDK subscriber as messagePublished', async () => {
  const c = await connect(srv, uniq('a'));
  const s = await c.stream(uniq('rstream'));
  await established(c, s.sid);
  const got = waitFor(s, 'messagePublished', () => true, 10000);
  const msg = await rest().syncStreams(s.sid).streamMessages.create({ data: { via: 'rest' } });
  assert.match(msg.sid, /^TZ[0-9a-f]{32}$/);
  const ev = await got;
  assert.equal(ev.isLocal, false);
  assert.equal(ev.message.sid, msg.sid);
  assert.deepEqual(ev.message.data, { via: 'rest' });
});

test('removing a document, list, map and stream through REST emits removed on SDK subscribers', async () => {
  const c = await connect(srv, uniq('a'));
  const d = await c.document(uniq('rrd'));
  const l = await c.list(uniq('rrl'));
  const m = await c.map(uniq('rrm'));
  const s = await c.stream(uniq('rrs'));
  for (const o of [d, l, m, s]) await established(c, o.sid);
  const removed = [d, l, m, s].map((o) => waitFor(o, 'removed', () => true, 10000));
  await rest().documents(d.sid).remove();
  await rest().syncLists(l.sid).remove();
  await rest().syncMaps(m.sid).remove();
  await rest().syncStreams(s.sid).remove();
  const evs = await Promise.all(removed);
  assert.deepEqual(evs.map((e) => e.isLocal), [false, false, false, false]);
});

test('REST document TTL update: SDK data unchanged', async () => {
  const c = await connect(srv, uniq('a'));
  const d = await c.document({ id: uniq('rttl'), data: { x: 1 } });
  const t0 = Date.now();
  const r = await rest().documents(d.sid).update({ ttl: 100 });
  assert.deepEqual(r.data, { x: 1 });
  assert.ok(Math.abs(new Date(r.dateExpires).getTime() - (t0 + 100000)) < 5000);
  await d.update({ y: 2 });
  assert.deepEqual((await rest().documents(d.sid).fetch()).data, { x: 1, y: 2 });
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
