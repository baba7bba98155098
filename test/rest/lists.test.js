'use strict';
// REST v1 Lists (operations 15-19), List Items (20-24) and List Permissions (25-28) through the
// official `twilio` Node helper library.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, twilio } = require('../lib/harness');
const { sidRe, uniq, expectRestError, assertExpires } = require('./util');

const srv = useServer({ name: 'rest-lists' });

// A fresh service for this file (lazily: Node 20 runs top-level before() hooks concurrently).
let svcSid;
let ready$ = null;
const ready = () => (ready$ = ready$ || srv.restClient().sync.v1.services.create({ friendlyName: 'lists suite' })
  .then((s) => { svcSid = s.sid; }));
const svc = () => srv.restClient().sync.v1.services(svcSid);

function assertList(l, uniqueName) {
  assert.match(l.sid, sidRe('ES'));
  assert.equal(l.uniqueName, uniqueName);
  assert.equal(l.accountSid, srv.creds.accountSid);
  assert.equal(l.serviceSid, svcSid);
  const url = `${srv.baseUrl}/v1/Services/${svcSid}/Lists/${l.sid}`;
  assert.equal(l.url, url);
  assert.deepEqual(l.links, { items: `${url}/Items`, permissions: `${url}/Permissions` });
  assert.equal(typeof l.revision, 'string');
  assert.equal(l.createdBy, 'system');
  assert.ok(l.dateCreated instanceof Date && l.dateUpdated instanceof Date);
  assert.equal(l.data, undefined, 'lists have no data');
}

function assertItem(it, listSid, index, data) {
  assert.equal(it.index, index);
  assert.equal(typeof it.index, 'number');
  assert.equal(it.accountSid, srv.creds.accountSid);
  assert.equal(it.serviceSid, svcSid);
  assert.equal(it.listSid, listSid);
  assert.equal(it.url, `${srv.baseUrl}/v1/Services/${svcSid}/Lists/${listSid}/Items/${index}`);
  assert.equal(typeof it.revision, 'string');
  assert.deepEqual(it.data, data);
  assert.equal(it.createdBy, 'system');
  assert.ok(it.dateCreated instanceof Date && it.dateUpdated instanceof Date);
}

test('syncLists.create / fetch (SID, unique name) / update / list / remove', async () => {
  await ready();
  const name = uniq('list é');
  const l = await svc().syncLists.create({ uniqueName: name });
  assertList(l, name);
  assert.equal(l.dateExpires, null);
  assert.equal(l.revision, '0');
  assert.deepEqual((await svc().syncLists(l.sid).fetch()).toJSON(), l.toJSON());
  assert.deepEqual((await svc().syncLists(name).fetch()).toJSON(), l.toJSON());

  const t0 = Date.now();
  const u = await svc().syncLists(name).update({ ttl: 600 });
  assertExpires(u.dateExpires, 600, t0, Date.now(), 'update ttl');
  assert.equal(u.sid, l.sid);

  const anon = await svc().syncLists.create();
  assertList(anon, null);

  const all = await svc().syncLists.list();
  assert.deepEqual(all.map((x) => x.sid), [l.sid, anon.sid], 'creation order');
  const paged = await svc().syncLists.list({ pageSize: 1 });
  assert.deepEqual(paged.map((x) => x.sid), [l.sid, anon.sid]);
  const seen = [];
  await svc().syncLists.each({ pageSize: 1 }, (x) => seen.push(x.sid));
  assert.deepEqual(seen, [l.sid, anon.sid]);
  const p1 = await svc().syncLists.page({ pageSize: 1 });
  assert.deepEqual(p1.instances.map((x) => x.sid), [l.sid]);
  const p2 = await p1.nextPage();
  assert.deepEqual(p2.instances.map((x) => x.sid), [anon.sid]);
  assert.equal(p2.nextPageUrl, undefined);

  assert.equal(await svc().syncLists(name).remove(), true);
  assert.equal(await anon.remove(), true);
  await expectRestError(svc().syncLists(l.sid).fetch(), 404, 20404, 'removed list');
  await expectRestError(svc().syncLists(name).syncListItems.list(), 404, 20404, 'items of removed list');
  assert.deepEqual(await svc().syncLists.list(), []);
});

test('list ttl / collectionTtl: the alias, collectionTtl wins when both are sent, 0 clears', async () => {
  await ready();
  let t0 = Date.now();
  const a = await svc().syncLists.create({ uniqueName: uniq('ttl-a'), ttl: 100 });
  assertExpires(a.dateExpires, 100, t0, Date.now(), 'create ttl');
  t0 = Date.now();
  const b = await svc().syncLists.create({ uniqueName: uniq('ttl-b'), collectionTtl: 200 });
  assertExpires(b.dateExpires, 200, t0, Date.now(), 'create collectionTtl');
  t0 = Date.now();
  const c = await svc().syncLists.create({ uniqueName: uniq('ttl-c'), ttl: 100, collectionTtl: 300 });
  assertExpires(c.dateExpires, 300, t0, Date.now(), 'create ttl + collectionTtl: ttl ignored');
  t0 = Date.now();
  const u = await svc().syncLists(c.sid).update({ collectionTtl: 400 });
  assertExpires(u.dateExpires, 400, t0, Date.now(), 'update collectionTtl');
  const cleared = await svc().syncLists(c.sid).update({ collectionTtl: 0 });
  assert.equal(cleared.dateExpires, null);
  for (const l of [a, b, c]) await l.remove();
});

test('list items: create returns increasing indexes; fetch / update / remove; ETag = revision', async () => {
  await ready();
  const l = await svc().syncLists.create({ uniqueName: uniq('items') });
  const items = svc().syncLists(l.sid).syncListItems;
  const res = await items.createWithHttpInfo({ data: { n: 0, s: 'zero é' } });
  assert.equal(res.statusCode, 201);
  assertItem(res.body, l.sid, 0, { n: 0, s: 'zero é' });
  assert.equal(res.headers.etag, res.body.revision);
  assert.equal(res.body.dateExpires, null);
  const second = await svc().syncLists(l.uniqueName).syncListItems.create({ data: { n: 1 } });
  assertItem(second, l.sid, 1, { n: 1 });

  const f = await svc().syncLists(l.sid).syncListItems(1).fetchWithHttpInfo();
  assert.equal(f.statusCode, 200);
  assert.deepEqual(f.body.toJSON(), second.toJSON());
  assert.equal(f.headers.etag, second.revision);

  const u = await svc().syncLists(l.uniqueName).syncListItems(1).updateWithHttpInfo({ data: { n: 1, updated: true } });
  assertItem(u.body, l.sid, 1, { n: 1, updated: true });
  assert.notEqual(u.body.revision, second.revision);
  assert.equal(u.headers.etag, u.body.revision);

  assert.equal(await svc().syncLists(l.sid).syncListItems(0).remove(), true);
  await expectRestError(svc().syncLists(l.sid).syncListItems(0).fetch(), 404, 20404, 'removed item');
  await expectRestError(svc().syncLists(l.sid).syncListItems(0).update({ data: {} }), 404, 20404, 'update removed item');
  await expectRestError(svc().syncLists(l.sid).syncListItems(0).remove(), 404, 20404, 'remove removed item');
  await expectRestError(svc().syncLists(l.sid).syncListItems(99).fetch(), 404, 20404, 'never-created item');

  // Indexes are never reused after a removal.
  const third = await items.create({ data: { n: 2 } });
  assert.ok(third.index > 1, `index after removals is ${third.index}`);
  assert.deepEqual((await items.list()).map((i) => i.index), [1, third.index]);

  // The list's own revision moves with item changes, dateUpdated too.
  const lf = await svc().syncLists(l.sid).fetch();
  assert.notEqual(lf.revision, l.revision, 'list revision changed after item writes');
  await l.remove();
});

test('list items conditional update / remove: ifMatch stale is 412 / 54155', async () => {
  await ready();
  const l = await svc().syncLists.create({ uniqueName: uniq('cond') });
  const it = await svc().syncLists(l.sid).syncListItems.create({ data: { v: 0 } });
  const ctx = () => svc().syncLists(l.sid).syncListItems(it.index);
  const u1 = await ctx().update({ data: { v: 1 }, ifMatch: it.revision });
  assert.deepEqual(u1.data, { v: 1 });
  await expectRestError(ctx().update({ data: { v: 'stale' }, ifMatch: it.revision }), 412, 54155, 'stale update');
  await expectRestError(ctx().remove({ ifMatch: it.revision }), 412, 54155, 'stale remove');
  const cur = await ctx().fetch();
  assert.deepEqual(cur.data, { v: 1 });
  assert.equal(cur.revision, u1.revision);
  assert.equal(await ctx().remove({ ifMatch: u1.revision }), true);
  await expectRestError(ctx().fetch(), 404, 20404, 'conditionally removed');
  await l.remove();
});

test('list item TTLs: itemTtl / ttl alias set the item dateExpires; collectionTtl re-arms the list', async () => {
  await ready();
  const l = await svc().syncLists.create({ uniqueName: uniq('itemttl') });
  const items = svc().syncLists(l.sid).syncListItems;
  let t0 = Date.now();
  const a = await items.create({ data: { a: 1 }, itemTtl: 120 });
  assertExpires(a.dateExpires, 120, t0, Date.now(), 'itemTtl');
  t0 = Date.now();
  const b = await items.create({ data: { b: 1 }, ttl: 130 });
  assertExpires(b.dateExpires, 130, t0, Date.now(), 'ttl alias');
  t0 = Date.now();
  const c = await items.create({ data: { c: 1 }, ttl: 10, itemTtl: 140 });
  assertExpires(c.dateExpires, 140, t0, Date.now(), 'itemTtl wins over ttl');
  assert.equal((await svc().syncLists(l.sid).fetch()).dateExpires, null, 'item TTLs do not touch the list');

  t0 = Date.now();
  const d = await items.create({ data: { d: 1 }, collectionTtl: 500 });
  const t1 = Date.now();
  assert.equal(d.dateExpires, null, 'collectionTtl alone does not expire the item');
  assertExpires((await svc().syncLists(l.sid).fetch()).dateExpires, 500, t0, t1, 'collectionTtl on item create');

  t0 = Date.now();
  const u = await svc().syncLists(l.sid).syncListItems(a.index).update({ itemTtl: 900, collectionTtl: 1000 });
  const t2 = Date.now();
  assertExpires(u.dateExpires, 900, t0, t2, 'item update itemTtl');
  assert.deepEqual(u.data, { a: 1 }, 'ttl-only update keeps data');
  assertExpires((await svc().syncLists(l.sid).fetch()).dateExpires, 1000, t0, t2, 'collectionTtl on item update');
  const cleared = await svc().syncLists(l.sid).syncListItems(a.index).update({ itemTtl: 0 });
  assert.equal(cleared.dateExpires, null);
  await l.remove();
});

test('list items listing: 7 items, pageSize 3, order desc, from, bounds exclusive', async () => {
  await ready();
  const l = await svc().syncLists.create({ uniqueName: uniq('paging') });
  const items = svc().syncLists(l.sid).syncListItems;
  for (let i = 0; i < 7; i++) assert.equal((await items.create({ data: { i } })).index, i);
  const idx = (arr) => arr.map((x) => x.index);

  assert.deepEqual(idx(await items.list()), [0, 1, 2, 3, 4, 5, 6]);
  const all = await items.list({ pageSize: 3 });
  assert.deepEqual(idx(all), [0, 1, 2, 3, 4, 5, 6], 'list({pageSize: 3}) returns all 7 in index order');
  all.forEach((it, i) => assertItem(it, l.sid, i, { i }));
  assert.deepEqual(idx(await items.list({ order: 'desc', pageSize: 3 })), [6, 5, 4, 3, 2, 1, 0]);
  assert.deepEqual(idx(await items.list({ order: 'asc', from: '3', pageSize: 3 })), [3, 4, 5, 6]);
  assert.deepEqual(idx(await items.list({ from: '3', bounds: 'inclusive', pageSize: 2 })), [3, 4, 5, 6]);
  assert.deepEqual(idx(await items.list({ from: '3', bounds: 'exclusive', pageSize: 2 })), [4, 5, 6]);
  assert.deepEqual(idx(await items.list({ order: 'desc', from: '3', pageSize: 2 })), [3, 2, 1, 0]);
  assert.deepEqual(idx(await items.list({ order: 'desc', from: '3', bounds: 'exclusive', pageSize: 2 })), [2, 1, 0]);
  assert.deepEqual(idx(await items.list({ from: '6', bounds: 'exclusive' })), []);
  assert.deepEqual(idx(await items.list({ order: 'desc', from: '0', bounds: 'exclusive' })), []);
  assert.deepEqual(idx(await items.list({ from: '100' })), []);
  assert.deepEqual(idx(await items.list({ limit: 4, pageSize: 3, order: 'desc' })), [6, 5, 4, 3]);

  const seen = [];
  await items.each({ pageSize: 3, order: 'desc', from: '5', bounds: 'exclusive' }, (it) => seen.push(it.index));
  assert.deepEqual(seen, [4, 3, 2, 1, 0]);

  const p1 = await items.page({ pageSize: 3, order: 'desc' });
  assert.deepEqual(idx(p1.instances), [6, 5, 4]);
  assert.equal(p1.previousPageUrl, undefined, 'the first page has no previous_page_url');
  const itemsUrl = `${srv.baseUrl}/v1/Services/${svcSid}/Lists/${l.sid}/Items`;
  assert.ok(p1.nextPageUrl.startsWith(itemsUrl + '?'), `absolute next_page_url: ${p1.nextPageUrl}`);
  assert.match(p1.nextPageUrl, /[?&]Order=desc(&|$)/, 'filters are kept in next_page_url');
  assert.equal(p1._payload.meta.key, 'items');
  const p2 = await p1.nextPage();
  assert.deepEqual(idx(p2.instances), [3, 2, 1]);
  const p3 = await p2.nextPage();
  assert.deepEqual(idx(p3.instances), [0]);
  assert.equal(p3.nextPageUrl, undefined);
  assert.ok(p3.previousPageUrl, 'item pages have previous_page_url');
  const back = await p3.previousPage();
  assert.deepEqual(idx(back.instances), [3, 2, 1], 'previousPage() of page 3 is page 2');
  const front = await back.previousPage();
  assert.deepEqual(idx(front.instances), [6, 5, 4], 'and then page 1');

  // Gaps after removals are skipped by paging.
  await items(2).remove();
  await items(3).remove();
  assert.deepEqual(idx(await items.list({ pageSize: 2 })), [0, 1, 4, 5, 6]);
  assert.deepEqual(idx(await items.list({ from: '2', pageSize: 2 })), [4, 5, 6], 'from a removed index');
  await l.remove();
});

test('list permissions: update / fetch / list / remove (identity with spaces, list by unique name)', async () => {
  await ready();
  const name = uniq('perm list');
  const l = await svc().syncLists.create({ uniqueName: name });
  const identity = 'Jane Doe ✓';
  const p = await svc().syncLists(name).syncListPermissions(identity).update({ read: true, write: true, manage: false });
  assert.equal(p.accountSid, srv.creds.accountSid);
  assert.equal(p.serviceSid, svcSid);
  assert.equal(p.listSid, l.sid);
  assert.equal(p.identity, identity);
  assert.deepEqual([p.read, p.write, p.manage], [true, true, false]);
  assert.equal(p.url, `${srv.baseUrl}/v1/Services/${svcSid}/Lists/${l.sid}/Permissions/${encodeURIComponent(identity)}`);
  assert.deepEqual((await svc().syncLists(l.sid).syncListPermissions(identity).fetch()).toJSON(), p.toJSON());
  const p2 = await svc().syncLists(l.sid).syncListPermissions(identity).update({ read: false, write: false, manage: true });
  assert.deepEqual([p2.read, p2.write, p2.manage], [false, false, true]);
  for (const id of ['a', 'b', 'c']) {
    await svc().syncLists(l.sid).syncListPermissions(id).update({ read: true, write: false, manage: false });
  }
  const listed = await svc().syncLists(l.sid).syncListPermissions.list({ pageSize: 3 });
  assert.deepEqual(listed.map((x) => x.identity).sort(), ['a', 'b', 'c', identity].sort());
  const eachIds = [];
  await svc().syncLists(name).syncListPermissions.each({ pageSize: 1 }, (x) => eachIds.push(x.identity));
  assert.deepEqual(eachIds.sort(), ['a', 'b', 'c', identity].sort());
  assert.equal(await svc().syncLists(l.sid).syncListPermissions(identity).remove(), true);
  await expectRestError(svc().syncLists(l.sid).syncListPermissions(identity).fetch(), 404, 20404, 'removed permission');
  await expectRestError(svc().syncLists(l.sid).syncListPermissions(identity).remove(), 404, 20404, 'remove twice');
  await expectRestError(svc().syncLists('no such list').syncListPermissions.list(), 404, 20404, 'permissions of unknown list');
  await l.remove();
});
