'use strict';
// REST v1 error responses as the official `twilio` Node helper library surfaces them: a
// RestException with status, code, moreInfo and message, for every error class a Node backend
// can provoke through the library's public API.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, twilio } = require('../lib/harness');
const { uniq } = require('./util');

const { RestException } = twilio;
const srv = useServer({ name: 'rest-errors' });

async function expectRestError(promise, status, code, what = '') {
  const err = await promise.then(
    (v) => assert.fail(`${what}: expected RestException ${status}/${code}, got success ${JSON.stringify(v && v.toJSON ? v.toJSON() : v)}`),
    (e) => e,
  );
  assert.ok(err instanceof RestException, `${what}: expected a RestException, got ${err && err.stack}`);
  assert.equal(err.status, status, `${what}: status (message ${JSON.stringify(err.message)}, code ${err.code})`);
  assert.equal(err.code, code, `${what}: code (message ${JSON.stringify(err.message)})`);
  assert.equal(err.moreInfo, `https://www.twilio.com/docs/errors/${code}`, `${what}: moreInfo`);
  assert.ok(typeof err.message === 'string' && err.message.length > 0, `${what}: message`);
  assert.doesNotMatch(err.message, /^\[HTTP \d+\] Failed to execute request$/, `${what}: the body was JSON with a message`);
  return err;
}

// A fresh service for this file (lazily: Node 20 runs top-level before() hooks concurrently).
let svcSid;
let ready$ = null;
const ready = () => (ready$ = ready$ || srv.restClient().sync.v1.services.create({ friendlyName: 'errors suite' })
  .then((s) => { svcSid = s.sid; }));
const svc = () => srv.restClient().sync.v1.services(svcSid);

const fakeSid = (prefix) => prefix + '0123456789abcdef0123456789abcdef';

test('wrong credentials are 401 / 20003 for every credential style and operation kind', async () => {
  await ready();
  const { accountSid, apiKey, authToken, apiSecret } = srv.creds;
  const clients = {
    'API key, wrong secret': srv.restClient({ password: apiSecret.slice(0, -1) + (apiSecret.endsWith('a') ? 'b' : 'a') }),
    'unknown API key': srv.restClient({ username: fakeSid('SK') }),
    'API secret used as auth token': (() => { const c = twilio(accountSid, apiSecret); c.sync.baseUrl = srv.baseUrl; return c; })(),
    'account SID, wrong auth token': (() => { const c = twilio(accountSid, authToken + 'x'); c.sync.baseUrl = srv.baseUrl; return c; })(),
    'unknown account SID': (() => { const c = twilio(fakeSid('AC'), authToken); c.sync.baseUrl = srv.baseUrl; return c; })(),
    'auth token used with the API key': srv.restClient({ username: apiKey, password: authToken }),
  };
  for (const [what, c] of Object.entries(clients)) {
    const s = c.sync.v1.services(svcSid);
    await expectRestError(c.sync.v1.services.list(), 401, 20003, `${what}: services.list`);
    await expectRestError(c.sync.v1.services.create({ friendlyName: 'x' }), 401, 20003, `${what}: services.create`);
    await expectRestError(s.fetch(), 401, 20003, `${what}: service fetch`);
    await expectRestError(s.documents.create({ data: {} }), 401, 20003, `${what}: documents.create`);
    await expectRestError(s.syncMaps('m').syncMapItems('k').remove(), 401, 20003, `${what}: map item remove`);
    await expectRestError(s.syncStreams('x').streamMessages.create({ data: {} }), 401, 20003, `${what}: stream message`);
  }
  // Nothing was created by the rejected requests.
  assert.deepEqual(await svc().documents.list(), []);
});

// Twilio's REST API answers every missing resource with 404 20404 naming the path (the per-kind 54xxx
// codes are the SDK's); apps branch on it.
test('unknown objects: 404 20404, by SID and by unique name', async () => {
  await ready();
  const cases = [
    ['document fetch SID', () => svc().documents(fakeSid('ET')).fetch(), 20404],
    ['document fetch name', () => svc().documents('no such doc').fetch(), 20404],
    ['document update', () => svc().documents('no such doc').update({ data: {} }), 20404],
    ['document remove', () => svc().documents(fakeSid('ET')).remove(), 20404],
    ['list fetch', () => svc().syncLists(fakeSid('ES')).fetch(), 20404],
    ['list update', () => svc().syncLists('nope').update({ ttl: 1 }), 20404],
    ['list remove', () => svc().syncLists('nope').remove(), 20404],
    ['list items of unknown list', () => svc().syncLists('nope').syncListItems.list(), 20404],
    ['list item create in unknown list', () => svc().syncLists('nope').syncListItems.create({ data: {} }), 20404],
    ['map fetch', () => svc().syncMaps(fakeSid('MP')).fetch(), 20404],
    ['map update', () => svc().syncMaps('nope').update({ ttl: 1 }), 20404],
    ['map remove', () => svc().syncMaps('nope').remove(), 20404],
    ['map item create in unknown map', () => svc().syncMaps('nope').syncMapItems.create({ key: 'k', data: {} }), 20404],
    ['map items of unknown map', () => svc().syncMaps('nope').syncMapItems.list(), 20404],
    ['stream fetch', () => svc().syncStreams(fakeSid('TO')).fetch(), 20404],
    ['stream update', () => svc().syncStreams('nope').update({ ttl: 1 }), 20404],
    ['stream remove', () => svc().syncStreams('nope').remove(), 20404],
    ['service fetch', () => srv.restClient().sync.v1.services(fakeSid('IS')).fetch(), 20404],
    ['objects of unknown service', () => srv.restClient().sync.v1.services(fakeSid('IS')).syncMaps.list(), 20404],
  ];
  for (const [what, call, code] of cases) await expectRestError(call(), 404, code, what);

  const l = await svc().syncLists.create({ uniqueName: uniq('l') });
  const m = await svc().syncMaps.create({ uniqueName: uniq('m') });
  await expectRestError(svc().syncLists(l.sid).syncListItems(0).fetch(), 404, 20404, 'list item fetch');
  await expectRestError(svc().syncLists(l.sid).syncListItems(5).update({ data: {} }), 404, 20404, 'list item update');
  await expectRestError(svc().syncLists(l.sid).syncListItems(5).remove(), 404, 20404, 'list item remove');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('missing').fetch(), 404, 20404, 'map item fetch');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('missing').update({ data: {} }), 404, 20404, 'map item update');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('missing').remove(), 404, 20404, 'map item remove');
  await expectRestError(svc().syncMaps(m.sid).syncMapPermissions('nobody').fetch(), 404, 20404, 'map permission fetch');
  await expectRestError(svc().syncLists(l.sid).syncListPermissions('nobody').fetch(), 404, 20404, 'list permission fetch');
  // The common pattern: update, and on 20404 create.
  const err = await expectRestError(svc().syncMaps(m.sid).syncMapItems('alice').update({ data: { score: 1 } }), 404, 20404, 'upsert');
  assert.equal(err.message, `The requested resource /Services/${svcSid}/Maps/${m.sid}/Items/alice was not found`);
  await svc().syncMaps(m.sid).syncMapItems.create({ key: 'alice', data: { score: 1 } });
  assert.deepEqual((await svc().syncMaps(m.sid).syncMapItems('alice').fetch()).data, { score: 1 });
  await l.remove();
  await m.remove();
});

test('duplicate unique names are 409 / 54301 for documents, lists, maps and streams', async () => {
  await ready();
  const name = uniq('dup name');
  const kinds = {
    documents: svc().documents,
    syncLists: svc().syncLists,
    syncMaps: svc().syncMaps,
    syncStreams: svc().syncStreams,
  };
  for (const [kind, coll] of Object.entries(kinds)) {
    const first = await coll.create({ uniqueName: name });
    const err = await expectRestError(coll.create({ uniqueName: name }), 409, 54301, `${kind}: second create`);
    assert.match(err.message, /unique name/i);
    // The existing object is untouched and still the only one with that name.
    const again = await svc()[kind](name).fetch();
    assert.equal(again.sid, first.sid);
    assert.equal((await coll.list()).filter((o) => o.uniqueName === name).length, 1, `${kind}: one object named ${name}`);
  }
  for (const kind of Object.keys(kinds)) await svc()[kind](name).remove();
});

test('invalid unique names are 400 / 54302: SID-shaped, too long', async () => {
  await ready();
  const bad = [
    fakeSid('ET'), // a document SID
    fakeSid('ES'),
    'AB' + 'f'.repeat(32), // any two capitals + 32 hex
    'x'.repeat(321), // over 320 characters
  ];
  for (const name of bad) {
    const label = name.length > 40 ? `${name.length} chars` : name;
    await expectRestError(svc().documents.create({ uniqueName: name, data: {} }), 400, 54302, `document ${label}`);
    await expectRestError(svc().syncLists.create({ uniqueName: name }), 400, 54302, `list ${label}`);
    await expectRestError(svc().syncMaps.create({ uniqueName: name }), 400, 54302, `map ${label}`);
    await expectRestError(svc().syncStreams.create({ uniqueName: name }), 400, 54302, `stream ${label}`);
  }
  // Upper-case hex is not the SID pattern, and 320 characters is fine.
  for (const name of ['ET' + 'ABCDEF0123456789'.repeat(2), 'y'.repeat(320)]) {
    const d = await svc().documents.create({ uniqueName: name });
    assert.equal(d.uniqueName, name);
    await d.remove();
  }
  assert.deepEqual(await svc().documents.list(), [], 'no rejected object was created');
});

test('data over 16 KiB is 413 / 54006 on every data-carrying write; exactly 16 KiB is accepted', async () => {
  await ready();
  const fits = { s: 'x'.repeat(16384 - 8) }; // {"s":"…"} = 16384 bytes
  const over = { s: 'x'.repeat(16384 - 7) };
  assert.equal(JSON.stringify(fits).length, 16384);
  const doc = await svc().documents.create({ data: fits });
  assert.equal(doc.data.s.length, fits.s.length);
  await expectRestError(svc().documents.create({ data: over }), 413, 54006, 'document create');
  await expectRestError(svc().documents(doc.sid).update({ data: over }), 413, 54006, 'document update');
  assert.equal((await svc().documents(doc.sid).fetch()).revision, doc.revision, 'rejected update did not write');

  const l = await svc().syncLists.create();
  const li = await svc().syncLists(l.sid).syncListItems.create({ data: fits });
  await expectRestError(svc().syncLists(l.sid).syncListItems.create({ data: over }), 413, 54006, 'list item create');
  await expectRestError(svc().syncLists(l.sid).syncListItems(li.index).update({ data: over }), 413, 54006, 'list item update');
  const m = await svc().syncMaps.create();
  await svc().syncMaps(m.sid).syncMapItems.create({ key: 'k', data: fits });
  await expectRestError(svc().syncMaps(m.sid).syncMapItems.create({ key: 'k2', data: over }), 413, 54006, 'map item create');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('k').update({ data: over }), 413, 54006, 'map item update');
  // Multi-byte characters count in bytes: 5,462 × 'é' (2 bytes) + 8 > 16384.
  await expectRestError(svc().documents.create({ data: { s: 'é'.repeat(8190) } }), 413, 54006, 'document 16388 UTF-8 bytes');
  assert.deepEqual((await svc().syncMaps(m.sid).syncMapItems.list()).map((x) => x.key), ['k']);
  for (const o of [doc, l, m]) await o.remove();
});

test('invalid data: not JSON / not an object is 400 / 54008; null document data is 54101', async () => {
  await ready();
  const l = await svc().syncLists.create();
  const m = await svc().syncMaps.create();
  const d = await svc().documents.create({ data: { ok: true } });
  for (const [what, data] of [['not JSON', '{"a":'], ['array', [1, 2]], ['string', '"text"'], ['number', '42']]) {
    await expectRestError(svc().documents.create({ data }), 400, 54008, `document create ${what}`);
    await expectRestError(svc().documents(d.sid).update({ data }), 400, 54008, `document update ${what}`);
    await expectRestError(svc().syncLists(l.sid).syncListItems.create({ data }), 400, 54008, `list item ${what}`);
    await expectRestError(svc().syncMaps(m.sid).syncMapItems.create({ key: 'k', data }), 400, 54008, `map item ${what}`);
  }
  await expectRestError(svc().documents(d.sid).update({ data: null }), 400, 54101, 'document data null');
  assert.deepEqual((await svc().documents(d.sid).fetch()).data, { ok: true });
  for (const o of [l, m, d]) await o.remove();
});

test('invalid TTLs are 400 / 54011 for every TTL parameter', async () => {
  await ready();
  const l = await svc().syncLists.create();
  const m = await svc().syncMaps.create();
  const d = await svc().documents.create();
  const s = await svc().syncStreams.create();
  const li = await svc().syncLists(l.sid).syncListItems.create({ data: {} });
  await svc().syncMaps(m.sid).syncMapItems.create({ key: 'k', data: {} });
  for (const ttl of [-1, 31536001, 'abc', 1.5]) {
    const cases = [
      ['document create ttl', () => svc().documents.create({ ttl })],
      ['document update ttl', () => svc().documents(d.sid).update({ ttl })],
      ['list create ttl', () => svc().syncLists.create({ ttl })],
      ['list create collectionTtl', () => svc().syncLists.create({ collectionTtl: ttl })],
      ['list update collectionTtl', () => svc().syncLists(l.sid).update({ collectionTtl: ttl })],
      ['list item create itemTtl', () => svc().syncLists(l.sid).syncListItems.create({ data: {}, itemTtl: ttl })],
      ['list item create collectionTtl', () => svc().syncLists(l.sid).syncListItems.create({ data: {}, collectionTtl: ttl })],
      ['list item update ttl', () => svc().syncLists(l.sid).syncListItems(li.index).update({ ttl })],
      ['map create collectionTtl', () => svc().syncMaps.create({ collectionTtl: ttl })],
      ['map update ttl', () => svc().syncMaps(m.sid).update({ ttl })],
      ['map item create ttl', () => svc().syncMaps(m.sid).syncMapItems.create({ key: 'k2', data: {}, ttl })],
      ['map item update itemTtl', () => svc().syncMaps(m.sid).syncMapItems('k').update({ itemTtl: ttl })],
      ['stream create ttl', () => svc().syncStreams.create({ ttl })],
      ['stream update ttl', () => svc().syncStreams(s.sid).update({ ttl })],
    ];
    for (const [what, call] of cases) await expectRestError(call(), 400, 54011, `${what} ${ttl}`);
  }
  assert.equal((await svc().documents.list()).length, 1, 'no document created by a rejected request');
  assert.equal((await svc().syncLists(l.sid).syncListItems.list()).length, 1);
  assert.deepEqual((await svc().syncMaps(m.sid).syncMapItems.list()).map((x) => x.key), ['k']);
  for (const o of [l, m, d, s]) await o.remove();
});

test('duplicate map key is 409 / 54208; bad keys and identities are 400', async () => {
  await ready();
  const m = await svc().syncMaps.create();
  await svc().syncMaps(m.sid).syncMapItems.create({ key: 'taken', data: { first: true } });
  await expectRestError(svc().syncMaps(m.sid).syncMapItems.create({ key: 'taken', data: {} }), 409, 54208, 'duplicate key');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems.create({ key: '', data: {} }), 400, 54209, 'empty key');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems.create({ key: 'k'.repeat(321), data: {} }), 400, 54209, '321-char key');
  const long = await svc().syncMaps(m.sid).syncMapItems.create({ key: 'k'.repeat(320), data: {} });
  assert.equal(long.key.length, 320);
  await expectRestError(
    svc().syncMaps(m.sid).syncMapPermissions('i'.repeat(257)).update({ read: true, write: true, manage: true }),
    400, 54351, '257-char identity',
  );
  const ok = await svc().syncMaps(m.sid).syncMapPermissions('i'.repeat(256)).update({ read: true, write: false, manage: false });
  assert.equal(ok.identity.length, 256);
  await m.remove();
});

test('conditional writes: stale ifMatch is 412 with 54103 / 54155 / 54205; a malformed ifMatch is 400 / 54003', async () => {
  await ready();
  const d = await svc().documents.create({ data: { v: 0 } });
  await svc().documents(d.sid).update({ data: { v: 1 } });
  await expectRestError(svc().documents(d.sid).update({ data: { v: 2 }, ifMatch: d.revision }), 412, 54103, 'document');
  const l = await svc().syncLists.create();
  const li = await svc().syncLists(l.sid).syncListItems.create({ data: {} });
  await svc().syncLists(l.sid).syncListItems(li.index).update({ data: { x: 1 } });
  await expectRestError(svc().syncLists(l.sid).syncListItems(li.index).update({ data: {}, ifMatch: li.revision }), 412, 54155, 'list item');
  await expectRestError(svc().syncLists(l.sid).syncListItems(li.index).remove({ ifMatch: li.revision }), 412, 54155, 'list item remove');
  const m = await svc().syncMaps.create();
  const mi = await svc().syncMaps(m.sid).syncMapItems.create({ key: 'k', data: {} });
  await svc().syncMaps(m.sid).syncMapItems('k').update({ data: { x: 1 } });
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('k').update({ data: {}, ifMatch: mi.revision }), 412, 54205, 'map item');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('k').remove({ ifMatch: mi.revision }), 412, 54205, 'map item remove');
  for (const bad of ['not a revision', '-1', 'zz']) {
    await expectRestError(svc().documents(d.sid).update({ data: {}, ifMatch: bad }), 400, 54003, `document ifMatch ${bad}`);
    await expectRestError(svc().syncMaps(m.sid).syncMapItems('k').update({ data: {}, ifMatch: bad }), 400, 54003, `map item ifMatch ${bad}`);
  }
  assert.deepEqual((await svc().documents(d.sid).fetch()).data, { v: 1 });
  for (const o of [d, l, m]) await o.remove();
});

test('updates without parameters are 400 / 54010', async () => {
  await ready();
  const d = await svc().documents.create();
  const l = await svc().syncLists.create();
  const li = await svc().syncLists(l.sid).syncListItems.create({ data: {} });
  const m = await svc().syncMaps.create();
  await svc().syncMaps(m.sid).syncMapItems.create({ key: 'k', data: {} });
  const s = await svc().syncStreams.create();
  await expectRestError(svc().documents(d.sid).update(), 400, 54010, 'document');
  await expectRestError(svc().syncLists(l.sid).update(), 400, 54010, 'list');
  await expectRestError(svc().syncLists(l.sid).syncListItems(li.index).update(), 400, 54010, 'list item');
  await expectRestError(svc().syncMaps(m.sid).update(), 400, 54010, 'map');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems('k').update(), 400, 54010, 'map item');
  await expectRestError(svc().syncStreams(s.sid).update(), 400, 54010, 'stream');
  for (const o of [d, l, m, s]) await o.remove();
});

test('bad listing parameters: PageSize 54454, PageToken 54453, Order 54451, Bounds 54452, index 54458', async () => {
  await ready();
  const l = await svc().syncLists.create();
  await svc().syncLists(l.sid).syncListItems.create({ data: {} });
  const m = await svc().syncMaps.create();
  await expectRestError(svc().documents.page({ pageSize: 0.5 }), 400, 54454, 'documents PageSize 0.5');
  await expectRestError(svc().documents.page({ pageToken: 'garbage' }), 400, 54453, 'documents PageToken');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems.page({ pageToken: 'PTnot-base64!' }), 400, 54453, 'map items PageToken');
  await expectRestError(svc().syncLists(l.sid).syncListItems.list({ order: 'sideways' }), 400, 54451, 'Order');
  await expectRestError(svc().syncMaps(m.sid).syncMapItems.list({ bounds: 'open' }), 400, 54452, 'Bounds');
  await expectRestError(svc().syncLists(l.sid).syncListItems.list({ from: 'abc' }), 400, 54458, 'list From not an index');
  await expectRestError(svc().syncLists(l.sid).syncListItems('abc').fetch(), 400, 54458, 'index abc');
  await expectRestError(svc().syncLists(l.sid).syncListItems(-1).fetch(), 400, 54458, 'index -1');
  // 1000 is the largest page; a larger PageSize pages by 1000. The helper libraries send a list's limit
  // as its PageSize when no page size is given (twilio-node's Version.readLimits), so list({limit: 5000})
  // must page, not fail.
  assert.equal((await svc().syncLists(l.sid).syncListItems.page({ pageSize: 1000 })).instances.length, 1);
  const big = await svc().documents.page({ pageSize: 5000 });
  assert.equal(big._payload.meta.page_size, 1000, 'a page of 5000 is a page of 1000');
  assert.match(big._payload.meta.url, /PageSize=1000/);
  assert.equal((await svc().syncLists(l.sid).syncListItems.list({ limit: 1234 })).length, 1, 'list({limit: 1234})');
  await l.remove();
  await m.remove();
});

test('a PageToken from one collection does not leak another collection', async () => {
  await ready();
  const a = await svc().syncMaps.create();
  const b = await svc().syncMaps.create();
  for (const k of ['a1', 'a2', 'a3']) await svc().syncMaps(a.sid).syncMapItems.create({ key: k, data: {} });
  await svc().syncMaps(b.sid).syncMapItems.create({ key: 'b1', data: {} });
  const pa = await svc().syncMaps(a.sid).syncMapItems.page({ pageSize: 1 });
  const token = new URL(pa.nextPageUrl).searchParams.get('PageToken');
  assert.ok(token, `next_page_url carries a PageToken: ${pa.nextPageUrl}`);
  const pb = await svc().syncMaps(b.sid).syncMapItems.page({ pageSize: 1, pageToken: token }).then(
    (p) => p.instances.map((x) => x.key),
    (e) => e,
  );
  if (Array.isArray(pb)) {
    assert.ok(pb.every((k) => k.startsWith('b')), `items of map B only, got ${pb}`);
  } else {
    assert.ok(pb instanceof RestException && pb.status === 400 && pb.code === 54453, `either B's items or 54453, got ${pb}`);
  }
  await a.remove();
  await b.remove();
});
