'use strict';
// SyncDocument: open modes, create, set/update/mutate, events, TTL, removal, close, limits,
// concurrent writers and event ordering (spec §7.1, checklist 18–30, 47, 53).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { useServer, waitFor, sleep } = require('../lib/harness');
const { uniq, tap, connect, expectReject, record, until, bounded } = require('./util');

tap.install();
const srv = useServer({ name: 'document' });

/** Every document event (from notifications) for `sid` seen on the sockets of `client`. */
function docEventsOnWire(client, sid) {
  const out = [];
  for (const s of tap.socketsFor(client.__token)) {
    for (const f of s.notifications()) {
      const evs = f.payload.events || (f.payload.event ? [f.payload.event] : []);
      for (const e of evs) {
        if (e.document_sid === sid) out.push({ type: f.payload.event_type, id: e.id, event: e, t: f.t });
      }
    }
  }
  return out;
}

test('open_or_create by unique name, then open_existing by name and by sid from another client', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('doc');
  const d1 = await a.document({ id: name, mode: 'open_or_create', data: { n: 0, s: 'é' } });
  assert.match(d1.sid, /^ET[0-9a-f]{32}$/);
  assert.equal(d1.uniqueName, name);
  assert.deepEqual(d1.data, { n: 0, s: 'é' });
  assert.equal(typeof d1.revision, 'string');
  assert.equal(typeof d1.lastEventId, 'number');
  assert.ok(d1.dateUpdated instanceof Date && !Number.isNaN(d1.dateUpdated.getTime()), 'dateUpdated is a valid Date');
  assert.match(d1.uri, /^https?:\/\/[^/]+\/.+/);
  assert.equal(d1.dateExpires, null);

  const byName = await b.document({ id: name, mode: 'open_existing' });
  assert.equal(byName.sid, d1.sid);
  assert.deepEqual(byName.data, { n: 0, s: 'é' });
  assert.equal(byName.revision, d1.revision);

  const c = await connect(srv, uniq('c'));
  const bySid = await c.document(d1.sid);
  assert.equal(bySid.uniqueName, name);
  assert.deepEqual(bySid.data, { n: 0, s: 'é' });

  // plain string = open_or_create; for a new name the default data is {}
  const fresh = await c.document(uniq('doc-default'));
  assert.deepEqual(fresh.data, {});
});

test('open_existing on a missing document rejects with 404', async () => {
  const a = await connect(srv, uniq('a'));
  await expectReject(a.document({ id: uniq('missing'), mode: 'open_existing' }), { status: 404, codes: [54100, 54300] });
  await expectReject(a.document({ id: 'ET' + crypto.randomBytes(16).toString('hex'), mode: 'open_existing' }), {
    status: 404, codes: [54100, 54300],
  });
});

test('create_new for an existing unique name rejects with 409 / 54301', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('dup');
  const first = await a.document({ id: name, mode: 'create_new', data: { v: 1 } });
  assert.equal(first.uniqueName, name);
  await expectReject(b.document({ id: name, mode: 'create_new', data: { v: 2 } }), { status: 409, code: 54301 });
  const again = await b.document({ id: name, mode: 'open_existing' });
  assert.deepEqual(again.data, { v: 1 }, 'the rejected create did not overwrite');
});

test('two clients open_or_create the same new name concurrently → the same document', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('race');
  const [da, db] = await Promise.all([a.document(name), b.document(name)]);
  assert.equal(da.sid, db.sid);
});

test('anonymous document (no id) is created with a sid and no unique name; others open it by sid', async () => {
  const a = await connect(srv, uniq('a'));
  const anon = await a.document();
  assert.match(anon.sid, /^ET[0-9a-f]{32}$/);
  assert.equal(anon.uniqueName, null);
  const withData = await a.document({ data: { x: 1 }, ttl: 3600 });
  assert.deepEqual(withData.data, { x: 1 });
  assert.ok(withData.dateExpires, 'created with ttl → dateExpires set');
  const b = await connect(srv, uniq('b'));
  const opened = await b.document({ id: withData.sid, mode: 'open_existing' });
  assert.deepEqual(opened.data, { x: 1 });
});

test('set / update / mutate: results, revisions and updated events (isLocal true once, false once on the other client)', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('evt');
  const da = await a.document({ id: name, data: { n: 0 } });
  const db = await b.document({ id: name, mode: 'open_existing' });
  const la = record(da, 'updated');
  const lb = record(db, 'updated');

  // set (no If-Match, replaces)
  const rev0 = da.revision;
  const ev0 = da.lastEventId;
  const setResult = await da.set({ n: 1, tag: 'set' });
  assert.deepEqual(setResult, { n: 1, tag: 'set' });
  assert.notEqual(da.revision, rev0, 'revision changed');
  assert.ok(da.lastEventId > ev0, 'lastEventId advanced');
  await until(() => lb.events.length >= 1, 10000, 'remote updated after set');
  await sleep(300);
  assert.deepEqual(la.events.map((e) => [e.isLocal, e.data]), [[true, { n: 1, tag: 'set' }]], 'writer sees exactly one local event');
  assert.deepEqual(lb.events.map((e) => [e.isLocal, e.data]), [[false, { n: 1, tag: 'set' }]], 'other sees exactly one remote event');
  assert.deepEqual(lb.events[0].previousData, { n: 0 });
  assert.equal(db.revision, da.revision, 'event revision equals the write revision');
  assert.equal(db.lastEventId, da.lastEventId, 'event id equals the write last_event_id');

  // update (shallow merge, If-Match)
  const upd = await da.update({ extra: true });
  assert.deepEqual(upd, { n: 1, tag: 'set', extra: true });
  await until(() => lb.events.length >= 2, 10000, 'remote updated after update');

  // mutate
  const mut = await da.mutate((v) => ({ ...v, n: v.n + 1 }));
  assert.deepEqual(mut, { n: 2, tag: 'set', extra: true });
  await until(() => lb.events.length >= 3, 10000, 'remote updated after mutate');
  await sleep(300);
  assert.deepEqual(la.events.map((e) => e.isLocal), [true, true, true]);
  assert.deepEqual(lb.events.map((e) => e.isLocal), [false, false, false]);
  assert.deepEqual(db.data, { n: 2, tag: 'set', extra: true });

  // the remote client's update is based on the revision it learned from events (no 412 needed, but correct either way)
  await db.update({ fromB: 1 });
  await until(() => la.events.length >= 4, 10000, 'writer sees B\'s update');
  assert.deepEqual(da.data, { n: 2, tag: 'set', extra: true, fromB: 1 });
  assert.equal(la.events[3].isLocal, false);

  // wire: each document event id is strictly increasing on a subscriber connection
  const ids = docEventsOnWire(b, da.sid).filter((e) => e.type === 'document_updated').map((e) => e.id);
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `event ids strictly increasing: ${ids}`);
});

test('concurrent mutate from 3 clients, 10 increments each → no lost increments', async () => {
  const name = uniq('ctr');
  const clients = await Promise.all([0, 1, 2].map((i) => connect(srv, uniq(`m${i}`))));
  const docs = [];
  for (const c of clients) docs.push(await c.document({ id: name, data: { n: 0 } }));
  const N = 10;
  await bounded(Promise.all(docs.map(async (d) => {
    for (let i = 0; i < N; i++) await d.mutate((v) => ({ ...v, n: (v.n || 0) + 1 }));
  })), 20000, 'concurrent mutates');
  for (const d of docs) {
    await until(() => d.data.n === 3 * N, 10000, `doc data n == ${3 * N} (is ${d.data.n})`);
  }
  const check = await connect(srv, uniq('chk'));
  const fresh = await check.document({ id: name, mode: 'open_existing' });
  assert.equal(fresh.data.n, 3 * N);
  // the races were resolved through 412 (54103) + re-read, never through another error
  const docPath = new URL(fresh.uri).pathname;
  const replies = clients.flatMap((c) => tap.socketsFor(c.__token)).flatMap((s) => {
    const writes = new Set(s.out.filter((f) => f.header.method === 'message' && f.header.http_request.method === 'POST'
      && f.header.http_request.path === docPath).map((f) => f.header.id));
    return s.in.filter((f) => f.header.method === 'reply' && writes.has(f.header.id));
  });
  assert.ok(replies.length >= 3 * N, `at least ${3 * N} write replies (${replies.length})`);
  const conflicts = replies.filter((f) => f.header.http_status.code === 412);
  assert.ok(conflicts.length > 0, 'concurrent mutates produced at least one 412');
  assert.ok(conflicts.every((f) => f.payload && f.payload.code === 54103), 'every 412 carries code 54103');
  assert.deepEqual(replies.filter((f) => f.header.http_status.code >= 400 && f.header.http_status.code !== 412)
    .map((f) => [f.header.http_status.code, f.payload]), [], 'no other HTTP errors');
});

test('setTtl keeps data and sets dateExpires; setTtl(0) clears it', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('ttl');
  const d = await a.document({ id: name, data: { keep: 'me' } });
  const before = Date.now();
  await d.setTtl(60);
  assert.deepEqual(d.data, { keep: 'me' });
  assert.ok(d.dateExpires, 'dateExpires set');
  const exp = Date.parse(d.dateExpires);
  assert.ok(Math.abs(exp - (before + 60000)) < 5000, `dateExpires ${d.dateExpires} ≈ now + 60 s`);
  const b = await connect(srv, uniq('b'));
  const other = await b.document({ id: name, mode: 'open_existing' });
  assert.deepEqual(other.data, { keep: 'me' }, 'data unchanged on the server');
  assert.ok(Math.abs(Date.parse(other.dateExpires) - exp) < 2000, 'server reports the same expiry');
  await d.setTtl(0);
  assert.equal(d.dateExpires, null);
  await d.update({ more: 1 }); // still writable (412 round trip or not, the result must be right)
  assert.deepEqual(d.data, { keep: 'me', more: 1 });
  const c = await connect(srv, uniq('c'));
  const third = await c.document({ id: name, mode: 'open_existing' });
  assert.equal(third.dateExpires, null);
  assert.deepEqual(third.data, { keep: 'me', more: 1 });
});

test('a document whose ttl has passed can no longer be opened', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('expiring');
  const d = await a.document({ id: name, data: { short: true }, ttl: 1 });
  assert.ok(d.dateExpires);
  const b = await connect(srv, uniq('b'));
  await sleep(1500);
  const probe = await connect(srv, uniq('probe'));
  const deadline = Date.now() + 15000;
  let lastErr = null;
  for (;;) {
    try {
      const h = await probe.document({ id: name, mode: 'open_existing' });
      h.close(); // the next open does a fresh GET
    } catch (e) {
      lastErr = e;
      break;
    }
    if (Date.now() > deadline) break;
    await sleep(500);
  }
  assert.ok(lastErr, 'open_existing still succeeded 15 s after expiry');
  assert.equal(lastErr.status, 404);
  // the name is free again
  const again = await b.document({ id: name, mode: 'create_new', data: { second: 1 } });
  assert.notEqual(again.sid, d.sid);
});

test('removeDocument: removed (isLocal true) locally, removed (isLocal false) on the other client, then gone', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('rm');
  const da = await a.document({ id: name, data: { last: 1 } });
  const db = await b.document({ id: name, mode: 'open_existing' });
  const localRemoved = waitFor(da, 'removed', () => true, 10000);
  const remoteRemoved = waitFor(db, 'removed', () => true, 10000);
  await da.removeDocument();
  const lr = await localRemoved;
  const rr = await remoteRemoved;
  assert.equal(lr.isLocal, true);
  assert.equal(rr.isLocal, false);
  assert.deepEqual(rr.previousData, { last: 1 });
  const c = await connect(srv, uniq('c'));
  await expectReject(c.document({ id: name, mode: 'open_existing' }), { status: 404, codes: [54100, 54300] });
  // the name can be reused
  const again = await c.document({ id: name, mode: 'create_new', data: { second: true } });
  assert.notEqual(again.sid, da.sid);
});

test('a document deleted right after another client opens it → removed on that client (document_removed or subscription_failed 404)', async () => {
  const a = await connect(srv, uniq('a'));
  const d = await a.document({ id: uniq('gone') });
  const sid = d.sid;
  // B opens by sid while A deletes it right away: either the GET 404s (reject) or the subscription fails → removed.
  const b = await connect(srv, uniq('b'));
  const opened = await b.document({ id: sid, mode: 'open_existing' });
  const removed = waitFor(opened, 'removed', () => true, 10000);
  await d.removeDocument();
  const r = await removed;
  assert.equal(r.isLocal, false);
});

test('close() cancels the subscription: no more notifications for that document reach the closed client', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('close');
  const da = await a.document({ id: name, data: { n: 0 } });
  const db = await b.document({ id: name, mode: 'open_existing' });
  const got = waitFor(db, 'updated', (e) => e.data.n === 1, 10000);
  await da.set({ n: 1 });
  await got;
  db.close();
  await assert.rejects(async () => db.set({ n: 9 }), /closed/i);
  // the SDK sends a subscription cancel; wait for the server's subscription_canceled
  const [sock] = tap.socketsFor(b.__token);
  await until(() => sock.out.some((f) => f.header.method === 'message' && f.payload && f.payload.action === 'cancel'
    && f.payload.requests.some((r) => r.object_sid === da.sid)), 5000, 'cancel request sent');
  const cancel = sock.out.find((f) => f.header.method === 'message' && f.payload && f.payload.action === 'cancel');
  await until(() => sock.notifications((p) => p.event_type === 'subscription_canceled'
    && p.correlation_id === cancel.payload.correlation_id).length === 1, 5000, 'subscription_canceled with the same correlation_id');
  const cancelledAt = Date.now();
  await da.set({ n: 2 });
  await da.set({ n: 3 });
  await sleep(700);
  const late = docEventsOnWire(b, da.sid).filter((e) => e.type === 'document_updated' && e.t > cancelledAt);
  assert.deepEqual(late, [], 'no document_updated delivered after the cancel');
  // re-opening on the same client fetches the current state
  const again = await b.document({ id: name, mode: 'open_existing' });
  assert.deepEqual(again.data, { n: 3 });
});

test('a unique name shaped like a sid is rejected with 400 / 54302', async () => {
  const a = await connect(srv, uniq('a'));
  for (const name of ['ET' + crypto.randomBytes(16).toString('hex'), 'ZZ' + crypto.randomBytes(16).toString('hex')]) {
    await expectReject(a.document({ id: name, mode: 'create_new' }), { status: 400, code: 54302 });
  }
  await expectReject(a.document('AB' + crypto.randomBytes(16).toString('hex')), { status: 400, code: 54302 });
});

test('document data over 16 KiB is rejected with 413 / 54006 and the connection stays usable', async () => {
  const a = await connect(srv, uniq('a'));
  const d = await a.document({ id: uniq('big'), data: { small: true } });
  const states = record(a, 'connectionStateChanged');
  const exact = { s: 'x'.repeat(16384 - '{"s":""}'.length) };
  assert.equal(JSON.stringify(exact).length, 16384);
  await d.set(exact); // exactly 16 KiB is allowed
  const over = { s: 'x'.repeat(16385 - '{"s":""}'.length) };
  await expectReject(d.set(over), { status: 413, code: 54006 });
  await expectReject(a.document({ data: { s: 'y'.repeat(20000) } }), { status: 413, code: 54006 });
  // still connected on the same socket, and writes work
  await d.set({ after: 'big' });
  const b = await connect(srv, uniq('b'));
  const other = await b.document({ id: d.sid, mode: 'open_existing' });
  assert.deepEqual(other.data, { after: 'big' });
  assert.deepEqual(states.events, []);
  assert.equal(tap.socketsFor(a.__token).length, 1, 'no reconnect');
});

test('ordering: 3 writers × 30 updates; a subscriber sees every value once, strictly increasing, ending at the last write', async () => {
  const name = uniq('order');
  const sub = await connect(srv, uniq('sub'));
  const writers = await Promise.all([0, 1, 2].map((i) => connect(srv, uniq(`w${i}`))));
  const ds = await sub.document({ id: name, data: { n: 0 } });
  const seen = record(ds, 'updated');
  const wdocs = [];
  for (const w of writers) wdocs.push(await w.document({ id: name, mode: 'open_existing' }));
  const PER = 30;
  await bounded(Promise.all(wdocs.map(async (d, wi) => {
    for (let i = 0; i < PER; i++) await d.mutate((v) => ({ n: (v.n || 0) + 1, by: wi }));
  })), 20000, '90 mutates');
  const total = 3 * PER;
  await until(() => ds.data.n === total, 10000, `subscriber reaches n=${total} (at ${ds.data.n})`);
  await sleep(200);
  const ns = seen.events.map((e) => e.data.n);
  assert.deepEqual(ns, Array.from({ length: total }, (_, i) => i + 1), 'every update seen exactly once, in order');
  assert.ok(seen.events.every((e) => e.isLocal === false));
  // wire level: ids strictly increasing, no duplicates
  const ids = docEventsOnWire(sub, ds.sid).filter((e) => e.type === 'document_updated').map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, 'no duplicate event ids on the wire');
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], 'ids strictly increasing on the wire');
  assert.deepEqual(ds.data, wdocs.map((d) => d.data).find((x) => x.n === total));
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
