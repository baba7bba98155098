'use strict';
// SyncList: push/get/set/update/mutate/remove, paging, TTLs, context, removal, events between
// clients, item_url (spec §7.2, checklist 31–37, 46–47).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor, sleep } = require('../lib/harness');
const { uniq, tap, connect, expectReject, record, until, bounded } = require('./util');

tap.install();
const srv = useServer({ name: 'list' });

const idx = (page) => page.items.map((it) => it.index);

async function filledList(n) {
  const a = await connect(srv, uniq('filler'));
  const name = uniq('list');
  const l = await a.list(name);
  for (let i = 0; i < n; i++) await l.push({ i });
  return { a, l, name };
}

test('push returns indexes 0, 1, 2 with item metadata; itemAdded local on the pusher and remote on another client', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('push');
  const la = await a.list(name);
  assert.match(la.sid, /^ES[0-9a-f]{32}$/);
  assert.equal(la.uniqueName, name);
  assert.match(la.uri, /^https?:\/\/[^/]+\/.+/);
  assert.equal(typeof la.revision, 'string');
  assert.equal(typeof la.lastEventId, 'number');
  const lb = await b.list({ id: name, mode: 'open_existing' });
  assert.equal(lb.sid, la.sid);
  const snap = (e) => ({ ...e, item: { index: e.item.index, data: structuredClone(e.item.data) } });
  const addedA = record(la, 'itemAdded', snap);
  const addedB = record(lb, 'itemAdded', snap);
  const items = [];
  for (let i = 0; i < 3; i++) items.push(await la.push({ n: i }));
  assert.deepEqual(items.map((it) => it.index), [0, 1, 2]);
  for (const it of items) {
    assert.match(it.url, /^https?:\/\/[^/?#]+\/[^?#]+$/, 'absolute item url without query');
    assert.equal(typeof it.revision, 'string');
    assert.equal(typeof it.lastEventId, 'number');
    assert.ok(it.dateUpdated instanceof Date && !Number.isNaN(it.dateUpdated.getTime()));
  }
  assert.deepEqual(items.map((it) => it.data), [{ n: 0 }, { n: 1 }, { n: 2 }]);
  await until(() => addedB.events.length === 3, 10000, 'B sees 3 itemAdded');
  await sleep(200);
  assert.deepEqual(addedA.events.map((e) => [e.isLocal, e.item.index]), [[true, 0], [true, 1], [true, 2]]);
  assert.deepEqual(addedB.events.map((e) => [e.isLocal, e.item.index, e.item.data.n]), [[false, 0, 0], [false, 1, 1], [false, 2, 2]]);
});

test('get(i) from a fresh client, and get(missing) rejects with 404 / 54151', async () => {
  const { name } = await filledList(3);
  const b = await connect(srv, uniq('b'));
  const l = await b.list({ id: name, mode: 'open_existing' });
  const it = await l.get(1);
  assert.equal(it.index, 1);
  assert.deepEqual(it.data, { i: 1 });
  await expectReject(l.get(42), { status: 404, code: 54151 });
});

test('set / update / mutate an item: itemUpdated local and remote (with previousItemData)', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('upd');
  const la = await a.list(name);
  await la.push({ v: 0, keep: 'k' });
  const lb = await b.list({ id: name, mode: 'open_existing' });
  await lb.get(0); // cache the item on B, so its itemUpdated can carry previousItemData
  const snap = (e) => ({ ...e, item: { index: e.item.index, data: structuredClone(e.item.data) } });
  const ua = record(la, 'itemUpdated', snap);
  const ub = record(lb, 'itemUpdated', snap);
  const s = await la.set(0, { v: 1 });
  assert.equal(s.index, 0);
  assert.deepEqual(s.data, { v: 1 });
  await until(() => ub.events.length === 1, 10000, 'remote itemUpdated after set');
  assert.equal(ub.events[0].isLocal, false);
  assert.deepEqual(ub.events[0].item.data, { v: 1 });
  assert.deepEqual(ub.events[0].previousItemData, { v: 0, keep: 'k' });
  const u = await la.update(0, { w: 2 });
  assert.deepEqual(u.data, { v: 1, w: 2 });
  const m = await la.mutate(0, (d) => ({ ...d, v: d.v + 10 }));
  assert.deepEqual(m.data, { v: 11, w: 2 });
  await until(() => ub.events.length === 3, 10000, 'remote itemUpdated ×3');
  await sleep(200);
  assert.deepEqual(ua.events.map((e) => e.isLocal), [true, true, true]);
  assert.deepEqual(ub.events.map((e) => e.isLocal), [false, false, false]);
  assert.deepEqual((await lb.get(0)).data, { v: 11, w: 2 });
  await expectReject(la.set(7, { nope: 1 }), { status: 404, code: 54151 });
});

test('concurrent mutate of one item from 3 clients × 10 → no lost increments', async () => {
  const name = uniq('ctr');
  const clients = await Promise.all([0, 1, 2].map((i) => connect(srv, uniq(`m${i}`))));
  const lists = [];
  for (const c of clients) lists.push(await c.list(name));
  await lists[0].push({ n: 0 });
  await bounded(Promise.all(lists.map(async (l) => {
    for (let i = 0; i < 10; i++) await l.mutate(0, (d) => ({ n: (d.n || 0) + 1 }));
  })), 20000, 'concurrent item mutates');
  const chk = await connect(srv, uniq('chk'));
  const l = await chk.list({ id: name, mode: 'open_existing' });
  assert.deepEqual((await l.get(0)).data, { n: 30 });
});

test('remove(i): itemRemoved local and remote with previousItemData; the index is not reused', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('rm');
  const la = await a.list(name);
  await la.push({ x: 0 });
  await la.push({ x: 1 });
  const lb = await b.list({ id: name, mode: 'open_existing' });
  const rb = record(lb, 'itemRemoved');
  const localRemoved = waitFor(la, 'itemRemoved', (e) => e.isLocal === true, 10000);
  await la.remove(1);
  const lr = await localRemoved;
  assert.equal(lr.index, 1);
  await until(() => rb.events.some((e) => e.isLocal === false), 10000, 'remote itemRemoved');
  const r = rb.events.find((e) => e.isLocal === false);
  assert.equal(r.index, 1);
  assert.deepEqual(r.previousItemData, { x: 1 });
  const c = await connect(srv, uniq('c'));
  const lc = await c.list({ id: name, mode: 'open_existing' });
  await expectReject(lc.get(1), { status: 404, code: 54151 });
  const pushed = await la.push({ x: 2 });
  assert.equal(pushed.index, 2, 'indexes are never reused');
  const page = await lc.getItems({});
  assert.deepEqual(idx(page), [0, 2]);
  // removing a missing index: a client without a cached tombstone asks the server → 404
  const d = await connect(srv, uniq('d'));
  const ld = await d.list({ id: name, mode: 'open_existing' });
  await expectReject(ld.remove(1), { status: 404, code: 54151 });
});

/** GET item-page requests (params) the client `c` sent, with the server's meta. */
function pageRequests(c) {
  const out = [];
  for (const s of tap.socketsFor(c.__token)) {
    for (const f of s.out) {
      if (f.header.method !== 'message' || f.header.http_request.method !== 'GET' || !f.header.http_request.params.PageSize) continue;
      const r = s.in.find((x) => x.header.method === 'reply' && x.header.id === f.header.id);
      out.push({ params: f.header.http_request.params, status: r && r.header.http_status.code, body: r && r.payload });
    }
  }
  return out;
}
const range = (a, b) => (a <= b ? Array.from({ length: b - a + 1 }, (_, i) => a + i) : Array.from({ length: a - b + 1 }, (_, i) => a - i));

test('getItems paging ascending with pageSize, nextPage and prevPage (small list, PageSize ≥ 10 on the wire)', async () => {
  const { name } = await filledList(5);
  const b = await connect(srv, uniq('b'));
  const l = await b.list({ id: name, mode: 'open_existing' });
  const p1 = await l.getItems({ pageSize: 2 });
  assert.deepEqual(idx(p1), [0, 1]);
  assert.equal(p1.hasNextPage, true);
  assert.equal(p1.hasPrevPage, false);
  const p2 = await p1.nextPage();
  assert.deepEqual(idx(p2), [2, 3]);
  assert.equal(p2.hasNextPage, true);
  assert.equal(p2.hasPrevPage, true);
  const p3 = await p2.nextPage();
  assert.deepEqual(idx(p3), [4]);
  assert.equal(p3.hasNextPage, false);
  const back = await p3.prevPage();
  assert.deepEqual(idx(back), [2, 3]);
  assert.deepEqual(p3.items.map((i) => i.data), [{ i: 4 }]);
  const [q] = pageRequests(b);
  assert.equal(q.params.HideExpired, 'true');
  assert.equal(q.params.Order, 'asc');
  assert.ok(Number(q.params.PageSize) >= 10);
  assert.equal(q.body.meta.next_token, null, 'all 5 items fit in the page → no next_token');
  assert.equal(q.body.meta.previous_token, null);
});

test('getItems paging over 25 items: server pages with From (inclusive), next/previous tokens, both orders', async () => {
  const { name } = await filledList(25);
  // ascending, 10 per page: every page comes from the server
  const b = await connect(srv, uniq('b'));
  const l = await b.list({ id: name, mode: 'open_existing' });
  const a1 = await l.getItems({ pageSize: 10 });
  assert.deepEqual(idx(a1), range(0, 9));
  assert.equal(a1.hasNextPage, true);
  const a2 = await a1.nextPage();
  assert.deepEqual(idx(a2), range(10, 19));
  assert.equal(a2.hasNextPage, true);
  assert.equal(a2.hasPrevPage, true);
  const a3 = await a2.nextPage();
  assert.deepEqual(idx(a3), range(20, 24));
  assert.equal(a3.hasNextPage, false);
  const reqs = pageRequests(b);
  assert.ok(reqs.length >= 3, `3 page requests hit the server (${reqs.length})`);
  assert.equal(reqs[0].body.meta.previous_token, null);
  assert.ok(reqs[0].body.meta.next_token, 'first page has a next_token');
  assert.equal(reqs[1].params.From, '9', 'follow-up page starts from the last item (inclusive)');
  assert.equal(reqs[1].body.items[0].index, 9, 'From is inclusive');
  assert.ok(reqs[1].body.meta.previous_token, 'items exist before From → previous_token');

  // descending
  const c = await connect(srv, uniq('c'));
  const lc = await c.list({ id: name, mode: 'open_existing' });
  const d1 = await lc.getItems({ pageSize: 10, order: 'desc' });
  assert.deepEqual(idx(d1), range(24, 15));
  assert.equal(d1.hasNextPage, true);
  assert.equal(d1.hasPrevPage, false);
  const d2 = await d1.nextPage();
  assert.deepEqual(idx(d2), range(14, 5));
  const d3 = await d2.nextPage();
  assert.deepEqual(idx(d3), range(4, 0));
  assert.equal(d3.hasNextPage, false);
  const dreqs = pageRequests(c);
  assert.equal(dreqs[0].params.Order, 'desc');
  assert.equal(dreqs[1].params.From, '15');
  assert.equal(dreqs[1].body.items[0].index, 15, 'desc From is inclusive');

  // from, both orders, on fresh clients (no cache)
  const d = await connect(srv, uniq('d'));
  const ld = await d.list({ id: name, mode: 'open_existing' });
  const f1 = await ld.getItems({ from: 1, order: 'desc' });
  assert.deepEqual(idx(f1), [1, 0], 'desc from 1 includes 1');
  assert.equal(f1.hasNextPage, false);
  const e = await connect(srv, uniq('e'));
  const le = await e.list({ id: name, mode: 'open_existing' });
  const f2 = await le.getItems({ from: 12, pageSize: 10 });
  assert.deepEqual(idx(f2), range(12, 21), 'asc from 12 includes 12');
  assert.equal(f2.hasNextPage, true);
  assert.equal(f2.hasPrevPage, true);
  const f2n = await f2.nextPage();
  assert.deepEqual(idx(f2n), range(22, 24));
  const f2p = await f2.prevPage();
  assert.deepEqual(idx(f2p), range(2, 11));
});

test('setTtl on the list and setItemTtl on an item set dateExpires; data is unchanged', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('ttl');
  const l = await a.list(name);
  await l.push({ keep: 1 });
  const t0 = Date.now();
  await l.setTtl(120);
  assert.ok(l.dateExpires, 'list dateExpires');
  assert.ok(Math.abs(Date.parse(l.dateExpires) - (t0 + 120000)) < 5000);
  await l.setItemTtl(0, 60);
  const b = await connect(srv, uniq('b'));
  const lb = await b.list({ id: name, mode: 'open_existing' });
  assert.ok(Math.abs(Date.parse(lb.dateExpires) - (t0 + 120000)) < 5000, 'server keeps the list expiry');
  const it = await lb.get(0);
  assert.deepEqual(it.data, { keep: 1 });
  assert.ok(it.dateExpires, 'item dateExpires');
  assert.ok(Math.abs(Date.parse(it.dateExpires) - (t0 + 60000)) < 5000);
  await l.setTtl(0);
  assert.equal(l.dateExpires, null);
  // push with a ttl
  const withTtl = await l.push({ t: 1 }, { ttl: 30 });
  assert.ok(withTtl.dateExpires);
});

test('an expired item (ttl 1 s) is hidden from pages and get (HideExpired)', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('exp');
  const l = await a.list(name);
  await l.push({ keep: true });
  await l.push({ short: true }, { ttl: 1 });
  await l.push({ keep: 2 });
  await sleep(2200);
  const b = await connect(srv, uniq('b'));
  const lb = await b.list({ id: name, mode: 'open_existing' });
  assert.deepEqual(idx(await lb.getItems({})), [0, 2]);
  await expectReject(lb.get(1), { status: 404, code: 54151 });
});

test('getContext on a list created with context', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('ctx');
  const l = await a.list({ id: name, context: { owner: 'alice', n: 1 }, purpose: 'p' });
  const b = await connect(srv, uniq('b'));
  const lb = await b.list({ id: name, mode: 'open_existing' });
  assert.deepEqual(await lb.getContext(), { owner: 'alice', n: 1 });
  assert.deepEqual(await l.getContext(), { owner: 'alice', n: 1 });
});

test('an item learned only via itemAdded can be set and removed by that client (item_url)', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('url');
  const la = await a.list(name);
  const lb = await b.list({ id: name, mode: 'open_existing' });
  const seen = waitFor(lb, 'itemAdded', (e) => e.item.index === 0, 10000);
  await la.push({ from: 'a' });
  const ev = await seen;
  assert.match(ev.item.url, /^https?:\/\//, 'event carried item_url');
  const upd = waitFor(la, 'itemUpdated', (e) => e.isLocal === false, 10000);
  await lb.set(0, { from: 'b' });
  assert.deepEqual((await upd).item.data, { from: 'b' });
  const rem = waitFor(la, 'itemRemoved', (e) => e.isLocal === false, 10000);
  await lb.remove(0);
  assert.equal((await rem).index, 0);
});

test('removeList: removed locally (isLocal true) and on the other client (isLocal false); then 404', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('rml');
  const la = await a.list(name);
  await la.push({ z: 1 });
  const lb = await b.list({ id: name, mode: 'open_existing' });
  const lr = waitFor(la, 'removed', () => true, 10000);
  const rr = waitFor(lb, 'removed', () => true, 10000);
  await la.removeList();
  assert.equal((await lr).isLocal, true);
  assert.equal((await rr).isLocal, false);
  const c = await connect(srv, uniq('c'));
  await expectReject(c.list({ id: name, mode: 'open_existing' }), { status: 404, codes: [54150, 54300] });
});

test('list open modes: create_new duplicate → 409 / 54301; anonymous list', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('dupl');
  await a.list({ id: name, mode: 'create_new' });
  await expectReject(a.list({ id: name, mode: 'create_new' }), { status: 409, code: 54301 });
  const anon = await a.list();
  assert.match(anon.sid, /^ES[0-9a-f]{32}$/);
  assert.equal(anon.uniqueName, null);
});

test('list item data over 16 KiB → 413 / 54006, connection still usable', async () => {
  const a = await connect(srv, uniq('a'));
  const l = await a.list(uniq('big'));
  await expectReject(l.push({ s: 'x'.repeat(17000) }), { status: 413, code: 54006 });
  const ok = await l.push({ fine: true });
  await expectReject(l.set(ok.index, { s: 'x'.repeat(17000) }), { status: 413, code: 54006 });
  assert.equal(a.connectionState, 'connected');
  assert.deepEqual((await l.get(ok.index)).data, { fine: true });
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
