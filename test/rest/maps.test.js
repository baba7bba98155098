'use strict';
// REST v1 Maps (operations 29-33), Map Items (34-38) and Map Permissions (39-42) through the
// official `twilio` Node helper library.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, twilio } = require('../lib/harness');
const { sidRe, uniq, expectRestError, assertExpires } = require('./util');

const srv = useServer({ name: 'rest-maps' });

// A fresh service for this file (lazily: Node 20 runs top-level before() hooks concurrently).
let svcSid;
let ready$ = null;
const ready = () => (ready$ = ready$ || srv.restClient().sync.v1.services.create({ friendlyName: 'maps suite' })
  .then((s) => { svcSid = s.sid; }));
const svc = () => srv.restClient().sync.v1.services(svcSid);

// How a map key is written in a twilio-node path: the library refuses '/' and '?' in path
// parameters (utility.isValidPathParam) but does not escape anything itself, so such keys are
// passed pre-encoded; other keys are passed as they are (the URL parser escapes spaces etc.).
const keyParam = (k) => (/[/?#%]/.test(k) ? encodeURIComponent(k) : k);

function assertMap(m, uniqueName) {
  assert.match(m.sid, sidRe('MP'));
  assert.equal(m.uniqueName, uniqueName);
  assert.equal(m.accountSid, srv.creds.accountSid);
  assert.equal(m.serviceSid, svcSid);
  const url = `${srv.baseUrl}/v1/Services/${svcSid}/Maps/${m.sid}`;
  assert.equal(m.url, url);
  assert.deepEqual(m.links, { items: `${url}/Items`, permissions: `${url}/Permissions` });
  assert.equal(typeof m.revision, 'string');
  assert.equal(m.createdBy, 'system');
  assert.ok(m.dateCreated instanceof Date && m.dateUpdated instanceof Date);
}

function assertItem(it, mapSid, key, data) {
  assert.equal(it.key, key);
  assert.equal(it.accountSid, srv.creds.accountSid);
  assert.equal(it.serviceSid, svcSid);
  assert.equal(it.mapSid, mapSid);
  // url = items URL + the key as one escaped path segment (any valid escaping: '+' may stay raw).
  const prefix = `${srv.baseUrl}/v1/Services/${svcSid}/Maps/${mapSid}/Items/`;
  assert.ok(it.url.startsWith(prefix), `url ${it.url}`);
  const seg = it.url.slice(prefix.length);
  assert.doesNotMatch(seg, /[/?# ]|[^\x21-\x7e]/, `key segment ${seg} is escaped`);
  assert.equal(decodeURIComponent(seg), key, `url ${it.url} names key ${JSON.stringify(key)}`);
  assert.equal(typeof it.revision, 'string');
  assert.deepEqual(it.data, data);
  assert.equal(it.createdBy, 'system');
  assert.ok(it.dateCreated instanceof Date && it.dateUpdated instanceof Date);
}

test('syncMaps.create / fetch (SID, unique name) / update / list / remove, ttl and collectionTtl', async () => {
  await ready();
  const name = uniq('map é');
  const m = await svc().syncMaps.create({ uniqueName: name });
  assertMap(m, name);
  assert.equal(m.dateExpires, null);
  assert.equal(m.revision, '0');
  assert.deepEqual((await svc().syncMaps(m.sid).fetch()).toJSON(), m.toJSON());
  assert.deepEqual((await svc().syncMaps(name).fetch()).toJSON(), m.toJSON());

  let t0 = Date.now();
  const u = await svc().syncMaps(name).update({ ttl: 700 });
  assertExpires(u.dateExpires, 700, t0, Date.now(), 'update ttl');
  t0 = Date.now();
  const u2 = await svc().syncMaps(name).update({ ttl: 5, collectionTtl: 800 });
  assertExpires(u2.dateExpires, 800, t0, Date.now(), 'collectionTtl wins over ttl');
  assert.equal((await svc().syncMaps(name).update({ ttl: 0 })).dateExpires, null, 'ttl 0 clears');
  t0 = Date.now();
  const withTtl = await svc().syncMaps.create({ collectionTtl: 900 });
  assertExpires(withTtl.dateExpires, 900, t0, Date.now(), 'create collectionTtl');
  assertMap(withTtl, null);

  assert.deepEqual((await svc().syncMaps.list()).map((x) => x.sid), [m.sid, withTtl.sid]);
  assert.deepEqual((await svc().syncMaps.list({ pageSize: 1 })).map((x) => x.sid), [m.sid, withTtl.sid]);
  const seen = [];
  await svc().syncMaps.each({ pageSize: 1 }, (x) => seen.push(x.sid));
  assert.deepEqual(seen, [m.sid, withTtl.sid]);
  const p1 = await svc().syncMaps.page({ pageSize: 1 });
  assert.deepEqual(p1.instances.map((x) => x.sid), [m.sid]);
  assert.deepEqual((await p1.nextPage()).instances.map((x) => x.sid), [withTtl.sid]);

  assert.equal(await svc().syncMaps(name).remove(), true);
  assert.equal(await withTtl.remove(), true);
  await expectRestError(svc().syncMaps(m.sid).fetch(), 404, 20404, 'removed map');
  await expectRestError(svc().syncMaps(name).syncMapItems('k').fetch(), 404, 20404, 'item of removed map');
  assert.deepEqual(await svc().syncMaps.list(), []);
});

test('map items: create / fetch / update / remove, ETag = revision, duplicate key is 409 / 54208', async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('items') });
  const res = await svc().syncMaps(m.sid).syncMapItems.createWithHttpInfo({ key: 'alpha', data: { a: 1 } });
  assert.equal(res.statusCode, 201);
  assertItem(res.body, m.sid, 'alpha', { a: 1 });
  assert.equal(res.body.dateExpires, null);
  assert.equal(res.headers.etag, res.body.revision);

  const f = await svc().syncMaps(m.uniqueName).syncMapItems('alpha').fetchWithHttpInfo();
  assert.deepEqual(f.body.toJSON(), res.body.toJSON());
  assert.equal(f.headers.etag, res.body.revision);

  const dup = await expectRestError(
    svc().syncMaps(m.sid).syncMapItems.create({ key: 'alpha', data: { a: 'dup' } }), 409, 54208, 'duplicate key',
  );
  assert.match(dup.message, /exist/i);
  assert.deepEqual((await svc().syncMaps(m.sid).syncMapItems('alpha').fetch()).data, { a: 1 }, 'duplicate create changed nothing');

  const u = await svc().syncMaps(m.sid).syncMapItems('alpha').updateWithHttpInfo({ data: { a: 2 } });
  assertItem(u.body, m.sid, 'alpha', { a: 2 });
  assert.notEqual(u.body.revision, res.body.revision);
  assert.equal(u.headers.etag, u.body.revision);

  assert.equal(await svc().syncMaps(m.sid).syncMapItems('alpha').remove(), true);
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('alpha').fetch(), 404, 20404, 'removed item');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('alpha').update({ data: {} }), 404, 20404, 'update missing item');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('alpha').remove(), 404, 20404, 'remove missing item');
  // The key can be created again after removal.
  const again = await svc().syncMaps(m.sid).syncMapItems.create({ key: 'alpha', data: { again: true } });
  assertItem(again, m.sid, 'alpha', { again: true });
  assert.notEqual((await svc().syncMaps(m.sid).fetch()).revision, m.revision, 'map revision moves with item writes');
  await m.remove();
});

test("map keys with '/', spaces, non-ASCII and punctuation round-trip through paths", async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('keys') });
  const items = svc().syncMaps(m.sid).syncMapItems;
  const keys = ['a/b c', 'a/b/c/', 'sp ace', 'ünï 键 😀', 'q?uery', 'hash#tag', '100%', 'plus+sign', 'x:y;z=1&w'];
  for (const key of keys) {
    const c = await items.create({ key, data: { key } });
    assertItem(c, m.sid, key, { key });
    const f = await svc().syncMaps(m.sid).syncMapItems(keyParam(key)).fetch();
    assert.equal(f.key, key, `fetch ${JSON.stringify(key)}`);
    assert.deepEqual(f.data, { key });
    const u = await svc().syncMaps(m.sid).syncMapItems(keyParam(key)).update({ data: { key, v: 2 } });
    assert.equal(u.key, key);
    assert.deepEqual(u.data, { key, v: 2 });
  }
  // twilio-node itself refuses a raw '/' in the path parameter.
  assert.throws(() => svc().syncMaps(m.sid).syncMapItems('a/b c'), /Parameter 'key' is not valid/);
  // '.' and '..' cannot be addressed through any URL (dot segments are resolved by the URL parser,
  // even as %2E), but they are valid keys: create and list them, and check their escaped url.
  for (const key of ['.', '..']) {
    const c = await items.create({ key, data: { dot: key } });
    assert.equal(c.key, key);
    assert.equal(c.url, `${srv.baseUrl}/v1/Services/${svcSid}/Maps/${m.sid}/Items/${'%2E'.repeat(key.length)}`);
  }
  const all = [...keys, '.', '..'];
  const byteOrder = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  const listed = await items.list({ pageSize: 4 });
  assert.deepEqual(listed.map((x) => x.key), [...all].sort(byteOrder), 'every key listed, in key order');
  for (const x of listed) assert.ok(x.url.startsWith(`${srv.baseUrl}/v1/Services/${svcSid}/Maps/${m.sid}/Items/`));
  for (const key of keys) {
    assert.equal(await svc().syncMaps(m.sid).syncMapItems(keyParam(key)).remove(), true, `remove ${JSON.stringify(key)}`);
  }
  assert.deepEqual((await items.list()).map((x) => x.key), ['.', '..']);
  await m.remove();
});

test('map items conditional update / remove: ifMatch stale is 412 / 54205', async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('cond') });
  const it = await svc().syncMaps(m.sid).syncMapItems.create({ key: 'k k', data: { v: 0 } });
  const ctx = () => svc().syncMaps(m.sid).syncMapItems('k k');
  const u1 = await ctx().update({ data: { v: 1 }, ifMatch: it.revision });
  assert.deepEqual(u1.data, { v: 1 });
  await expectRestError(ctx().update({ data: { v: 'stale' }, ifMatch: it.revision }), 412, 54205, 'stale update');
  await expectRestError(ctx().remove({ ifMatch: it.revision }), 412, 54205, 'stale remove');
  const cur = await ctx().fetch();
  assert.deepEqual(cur.data, { v: 1 });
  assert.equal(cur.revision, u1.revision);
  assert.equal(await ctx().remove({ ifMatch: u1.revision }), true);
  await expectRestError(ctx().fetch(), 404, 20404, 'conditionally removed');
  await m.remove();
});

test('map item TTLs: itemTtl / ttl alias / collectionTtl', async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('ttl') });
  const items = svc().syncMaps(m.sid).syncMapItems;
  let t0 = Date.now();
  const a = await items.create({ key: 'a', data: {}, itemTtl: 60 });
  assertExpires(a.dateExpires, 60, t0, Date.now(), 'itemTtl');
  t0 = Date.now();
  const b = await items.create({ key: 'b', data: {}, ttl: 70 });
  assertExpires(b.dateExpires, 70, t0, Date.now(), 'ttl alias');
  t0 = Date.now();
  const c = await items.create({ key: 'c', data: {}, collectionTtl: 80 });
  const t1 = Date.now();
  assert.equal(c.dateExpires, null);
  assertExpires((await svc().syncMaps(m.sid).fetch()).dateExpires, 80, t0, t1, 'collectionTtl re-arms the map');
  t0 = Date.now();
  const u = await svc().syncMaps(m.sid).syncMapItems('c').update({ ttl: 90 });
  assertExpires(u.dateExpires, 90, t0, Date.now(), 'update ttl');
  assert.deepEqual(u.data, {});
  assert.equal((await svc().syncMaps(m.sid).syncMapItems('c').update({ itemTtl: 0 })).dateExpires, null);
  await m.remove();
});

test('an expired map item is gone and its key can be created again', async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('exp') });
  const it = await svc().syncMaps(m.sid).syncMapItems.create({ key: 'short', data: { x: 1 }, itemTtl: 1 });
  const wait = it.dateExpires.getTime() + 1100 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('short').fetch(), 404, 20404, 'expired item');
  assert.deepEqual(await svc().syncMaps(m.sid).syncMapItems.list(), []);
  const again = await svc().syncMaps(m.sid).syncMapItems.create({ key: 'short', data: { x: 2 } });
  assert.deepEqual(again.data, { x: 2 });
  await m.remove();
});

test('map items listing: 7 keys, pageSize 3, order desc, from, bounds exclusive', async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('paging') });
  const items = svc().syncMaps(m.sid).syncMapItems;
  const keys = ['g', 'c', 'a', 'e', 'b', 'f', 'd']; // created out of order
  for (const key of keys) await items.create({ key, data: { key } });
  const k = (arr) => arr.map((x) => x.key);

  assert.deepEqual(k(await items.list({ pageSize: 3 })), ['a', 'b', 'c', 'd', 'e', 'f', 'g'], 'lexicographic key order');
  assert.deepEqual(k(await items.list({ order: 'desc', pageSize: 3 })), ['g', 'f', 'e', 'd', 'c', 'b', 'a']);
  assert.deepEqual(k(await items.list({ from: 'c', pageSize: 2 })), ['c', 'd', 'e', 'f', 'g']);
  assert.deepEqual(k(await items.list({ from: 'c', bounds: 'exclusive', pageSize: 2 })), ['d', 'e', 'f', 'g']);
  assert.deepEqual(k(await items.list({ from: 'cc', pageSize: 2 })), ['d', 'e', 'f', 'g'], 'from a key that does not exist');
  assert.deepEqual(k(await items.list({ order: 'desc', from: 'c', pageSize: 2 })), ['c', 'b', 'a']);
  assert.deepEqual(k(await items.list({ order: 'desc', from: 'c', bounds: 'exclusive', pageSize: 2 })), ['b', 'a']);
  assert.deepEqual(k(await items.list({ limit: 2, order: 'desc' })), ['g', 'f']);

  const seen = [];
  await items.each({ pageSize: 3, from: 'b', bounds: 'exclusive' }, (x) => seen.push(x.key));
  assert.deepEqual(seen, ['c', 'd', 'e', 'f', 'g']);

  const p1 = await items.page({ pageSize: 3, from: 'b' });
  assert.deepEqual(k(p1.instances), ['b', 'c', 'd']);
  assert.ok(p1.nextPageUrl.startsWith(`${srv.baseUrl}/v1/Services/${svcSid}/Maps/${m.sid}/Items?`), p1.nextPageUrl);
  const p2 = await p1.nextPage();
  assert.deepEqual(k(p2.instances), ['e', 'f', 'g']);
  assert.equal(p2.nextPageUrl, undefined, 'exactly two full pages: no third page');
  assert.ok(p2.previousPageUrl);
  assert.deepEqual(k((await p2.previousPage()).instances), ['b', 'c', 'd']);
  await m.remove();
});

test('map permissions: update / fetch / list / remove (identity with spaces, map by unique name)', async () => {
  await ready();
  const name = uniq('perm map');
  const m = await svc().syncMaps.create({ uniqueName: name });
  const identity = 'user with spaces';
  const p = await svc().syncMaps(name).syncMapPermissions(identity).update({ read: true, write: false, manage: true });
  assert.equal(p.accountSid, srv.creds.accountSid);
  assert.equal(p.serviceSid, svcSid);
  assert.equal(p.mapSid, m.sid);
  assert.equal(p.identity, identity);
  assert.deepEqual([p.read, p.write, p.manage], [true, false, true]);
  assert.equal(p.url, `${srv.baseUrl}/v1/Services/${svcSid}/Maps/${m.sid}/Permissions/user%20with%20spaces`);
  assert.deepEqual((await svc().syncMaps(m.sid).syncMapPermissions(identity).fetch()).toJSON(), p.toJSON());
  const p2 = await svc().syncMaps(m.sid).syncMapPermissions(identity).update({ read: false, write: false, manage: false });
  assert.deepEqual([p2.read, p2.write, p2.manage], [false, false, false]);
  for (const id of ['x', 'y']) await svc().syncMaps(m.sid).syncMapPermissions(id).update({ read: true, write: true, manage: true });
  const listed = await svc().syncMaps(m.sid).syncMapPermissions.list({ pageSize: 2 });
  assert.deepEqual(listed.map((x) => x.identity).sort(), [identity, 'x', 'y'].sort());
  for (const x of listed) assert.equal(x.mapSid, m.sid);
  const pg = await svc().syncMaps(m.sid).syncMapPermissions.page({ pageSize: 2 });
  assert.equal(pg.instances.length, 2);
  assert.equal((await pg.nextPage()).instances.length, 1);
  assert.equal(await svc().syncMaps(m.sid).syncMapPermissions('x').remove(), true);
  await expectRestError(svc().syncMaps(m.sid).syncMapPermissions('x').fetch(), 404, 20404, 'removed permission');
  assert.deepEqual((await svc().syncMaps(name).syncMapPermissions.list()).map((x) => x.identity).sort(), [identity, 'y'].sort());
  await expectRestError(svc().syncMaps('MP' + 'a'.repeat(32)).syncMapPermissions.list(), 404, 20404, 'permissions of unknown map');
  await m.remove();
});

test('map permissions page.previousPage() walks back (5 identities, pageSize 2)', async () => {
  await ready();
  const m = await svc().syncMaps.create({ uniqueName: uniq('perm pages') });
  for (const id of ['p1', 'p2', 'p3', 'p4', 'p5']) {
    await svc().syncMaps(m.sid).syncMapPermissions(id).update({ read: true, write: false, manage: false });
  }
  const perms = svc().syncMaps(m.sid).syncMapPermissions;
  const q1 = await perms.page({ pageSize: 2 });
  const q2 = await q1.nextPage();
  const q3 = await q2.nextPage();
  assert.equal(q3.instances.length, 1);
  assert.equal(q3.nextPageUrl, undefined);
  assert.ok(q3.previousPageUrl, `the last page has a previous_page_url (meta ${JSON.stringify(q3._payload.meta)})`);
  const back = await q3.previousPage();
  assert.deepEqual(back.instances.map((x) => x.identity), q2.instances.map((x) => x.identity));
  await m.remove();
});
