'use strict';
// Reconnect and replay (spec §2.7, §6.6, checklist 14–16, 52–53): a subscriber whose connection is
// dropped misses writes made by others, and after it reconnects must receive every missed event
// exactly once and in order, ending with the latest data. The subscriber talks to the server
// through a TCP relay (sdk/proxy.js) so the test can hold it away deterministically; one test also
// SIGKILLs and restarts the server (same port and data dir) while it is away.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor, waitForState, sleep } = require('../lib/harness');
const { uniq, tap, connect, record, until, established, bounded } = require('./util');
const { startProxy } = require('./proxy');

tap.install();
const srv = useServer({ name: 'reconnect' });
const proxies = [];
after(async () => {
  for (const p of proxies) await p.close();
});

/** A client connected through a fresh relay. */
async function viaProxy(identity) {
  const px = await startProxy(srv.port);
  proxies.push(px);
  const token = srv.mintToken(identity);
  const c = srv.newClient(identity, { token, clientOptions: { cdsUri: px.baseUrl, twilsock: { uri: px.wsUrl } } });
  c.__token = token;
  await waitForState(c, 'connected', 15000);
  return { c, px };
}

/** Cut the relay and wait until the client notices. */
async function cutAndWait(c, px) {
  const left = waitFor(c, 'connectionStateChanged', (s) => s !== 'connected', 10000);
  px.cut();
  await left;
}

/** Every event for `sid` seen on the wire by `client` (all its sockets), with socket index. */
function wireEvents(client, sid) {
  const out = [];
  tap.socketsFor(client.__token).forEach((s, si) => {
    for (const f of s.notifications()) {
      const evs = f.payload.events || (f.payload.event ? [f.payload.event] : []);
      for (const e of evs) {
        if ([e.document_sid, e.list_sid, e.map_sid].includes(sid)) {
          out.push({ socket: si, type: f.payload.event_type, id: e.id, corr: f.payload.correlation_id, mt: f.header.message_type });
        }
      }
    }
  });
  return out;
}

function assertStrictlyIncreasing(ids, what) {
  for (let i = 1; i < ids.length; i++) {
    assert.ok(ids[i] > ids[i - 1], `${what}: event ids strictly increasing, no duplicates: ${ids.join(',')}`);
  }
}

const docSnap = (e) => ({ n: e.data.n, isLocal: e.isLocal });
const itemSnap = (e) => ({
  isLocal: e.isLocal,
  index: e.item ? e.item.index : e.index,
  key: e.item ? e.item.key : e.key,
  data: e.item ? structuredClone(e.item.data) : undefined,
  prev: e.previousItemData,
});

test('a subscriber cut off during writes to a document, list and map receives every missed event once, in order', async () => {
  const a = await connect(srv, uniq('writer'));
  const dA = await a.document({ id: uniq('rdoc'), data: { n: 0 } });
  const lA = await a.list(uniq('rlist'));
  await lA.push({ i: 0 });
  await lA.push({ i: 1 });
  const mA = await a.map(uniq('rmap'));
  await mA.set('k1', { v: 1 });

  const { c: b, px } = await viaProxy(uniq('sub'));
  const dB = await b.document({ id: dA.sid, mode: 'open_existing' });
  const lB = await b.list({ id: lA.sid, mode: 'open_existing' });
  const mB = await b.map({ id: mA.sid, mode: 'open_existing' });
  for (const o of [dB, lB, mB]) await established(b, o.sid);
  const firstSock = tap.socketsFor(b.__token)[0];
  const firstInitReply = firstSock.in.find((f) => f.header.method === 'reply' && f.header.id === firstSock.inits()[0].header.id);

  const docEv = record(dB, 'updated', docSnap);
  const lAdd = record(lB, 'itemAdded', itemSnap);
  const lUpd = record(lB, 'itemUpdated', itemSnap);
  const lRem = record(lB, 'itemRemoved', itemSnap);
  const mAdd = record(mB, 'itemAdded', itemSnap);
  const mUpd = record(mB, 'itemUpdated', itemSnap);
  const mRem = record(mB, 'itemRemoved', itemSnap);

  await cutAndWait(b, px);

  for (let n = 1; n <= 5; n++) await dA.set({ n });
  await lA.push({ i: 2 });
  await lA.push({ i: 3 });
  await lA.set(0, { i: 'zero' });
  await lA.remove(1);
  await mA.set('k2', { v: 2 });
  await mA.set('k1', { v: 11 });
  await mA.remove('k1');
  assert.notEqual(b.connectionState, 'connected', 'the subscriber was away during the writes');
  assert.equal(docEv.events.length, 0);

  px.resume();
  await waitForState(b, 'connected', 15000);
  await until(() => dB.data.n === 5 && lRem.events.length >= 1 && mRem.events.length >= 1
    && lAdd.events.length >= 2 && mAdd.events.length >= 1, 15000, 'missed events after reconnect');
  await sleep(500); // catch any duplicate

  assert.deepEqual(docEv.events, [1, 2, 3, 4, 5].map((n) => ({ n, isLocal: false })), 'document: every missed update once, in order');
  assert.deepEqual(lAdd.events.map((e) => [e.index, e.data]), [[2, { i: 2 }], [3, { i: 3 }]], 'list itemAdded');
  assert.deepEqual(lUpd.events.map((e) => [e.index, e.data]), [[0, { i: 'zero' }]], 'list itemUpdated');
  assert.deepEqual(lRem.events.map((e) => [e.index, e.prev]), [[1, { i: 1 }]], 'list itemRemoved exactly once');
  assert.deepEqual(mAdd.events.map((e) => [e.key, e.data]), [['k2', { v: 2 }]], 'map itemAdded');
  assert.deepEqual(mUpd.events.map((e) => [e.key, e.data]), [['k1', { v: 11 }]], 'map itemUpdated');
  assert.deepEqual(mRem.events.map((e) => [e.key, e.prev]), [['k1', { v: 11 }]], 'map itemRemoved exactly once');

  // final state equals the latest
  assert.deepEqual(dB.data, { n: 5 });
  const items = (await lB.getItems({})).items.map((i) => [i.index, i.data]);
  assert.deepEqual(items, [[0, { i: 'zero' }], [2, { i: 2 }], [3, { i: 3 }]]);
  const mitems = (await mB.getItems({})).items.map((i) => [i.key, i.data]);
  assert.deepEqual(mitems, [['k2', { v: 2 }]]);

  // wire: reconnect init echoes the continuation token; one establish covers every object with
  // its last_event_id; replayed events carry the establish correlation_id; ids never repeat.
  const socks = tap.socketsFor(b.__token);
  assert.ok(socks.length >= 2, 'a new socket after the cut');
  const last = socks[socks.length - 1];
  const reinit = last.inits()[0];
  if (firstInitReply.header.continuation_token !== undefined) {
    assert.equal(reinit.header.continuation_token, firstInitReply.header.continuation_token, 'continuation_token echoed');
  }
  const est = last.out.filter((f) => f.header.method === 'message' && f.payload && f.payload.action === 'establish');
  const sids = est.flatMap((f) => f.payload.requests.map((r) => r.object_sid));
  for (const o of [dB, lB, mB]) assert.ok(sids.includes(o.sid), `re-established ${o.sid}`);
  for (const r of est.flatMap((f) => f.payload.requests)) assert.equal(typeof r.last_event_id, 'number');
  const corrs = new Set(est.map((f) => f.payload.correlation_id));
  const replayed = wireEvents(b, dB.sid).filter((e) => e.socket === socks.length - 1 && e.type === 'document_updated');
  assert.equal(replayed.length, 5, 'five document events replayed on the new socket');
  for (const e of replayed) assert.ok(corrs.has(e.corr), `replayed event carries the establish correlation_id (${e.corr})`);
  for (const o of [dB, lB, mB]) {
    const ids = wireEvents(b, o.sid).filter((e) => !e.type.startsWith('subscription_')).map((e) => e.id);
    assertStrictlyIncreasing(ids, o.sid);
  }
});

test('replay and live events interleave correctly: writes continue while the subscriber re-subscribes', async () => {
  const a = await connect(srv, uniq('writer2'));
  const dA = await a.document({ id: uniq('overlap'), data: { n: 0 } });
  const { c: b, px } = await viaProxy(uniq('sub2'));
  const dB = await b.document({ id: dA.sid, mode: 'open_existing' });
  await established(b, dB.sid);
  const seen = record(dB, 'updated', docSnap);
  await cutAndWait(b, px);
  let n = 0;
  for (; n < 30;) await dA.set({ n: ++n });
  px.resume();
  // keep writing while the subscriber reconnects and replays
  const t0 = Date.now();
  while (Date.now() - t0 < 3000 || b.connectionState !== 'connected') {
    await dA.set({ n: ++n });
    if (Date.now() - t0 > 15000) break;
  }
  for (let i = 0; i < 10; i++) await dA.set({ n: ++n });
  const total = n;
  await until(() => dB.data.n === total, 15000, `subscriber reaches n=${total} (at ${dB.data.n})`);
  await sleep(300);
  assert.deepEqual(seen.events.map((e) => e.n), Array.from({ length: total }, (_, i) => i + 1), 'every value once, in order');
  const ids = wireEvents(b, dB.sid).filter((e) => e.type === 'document_updated').map((e) => e.id);
  assertStrictlyIncreasing(ids, 'document');
});

test('server SIGKILL + restart: acknowledged writes survive, clients reconnect on their own and catch up', async () => {
  const a = await connect(srv, uniq('pre'));
  const dA = await a.document({ id: uniq('kill'), data: { n: 0 } });
  const lA = await a.list(uniq('kill-list'));
  for (let i = 0; i < 3; i++) await lA.push({ i });
  for (let n = 1; n <= 3; n++) await dA.set({ n });
  // B: through the relay, held away across the restart; A: direct, reconnects by itself
  const { c: b, px } = await viaProxy(uniq('held'));
  const dB = await b.document({ id: dA.sid, mode: 'open_existing' });
  const lB = await b.list({ id: lA.sid, mode: 'open_existing' });
  for (const o of [dB, lB]) await established(b, o.sid);
  const seenB = record(dB, 'updated', docSnap);
  const addB = record(lB, 'itemAdded', itemSnap);
  const seenA = record(dA, 'updated', docSnap);
  await cutAndWait(b, px);

  const aLeft = waitFor(a, 'connectionStateChanged', (s) => s !== 'connected', 10000);
  await srv.kill('SIGKILL');
  await aLeft;
  await srv.start();

  // a client connected after the restart sees the data written before the kill, and writes more
  const w = await connect(srv, uniq('post'));
  const dW = await w.document({ id: dA.sid, mode: 'open_existing' });
  assert.deepEqual(dW.data, { n: 3 }, 'acknowledged writes survived SIGKILL');
  const lW = await w.list({ id: lA.sid, mode: 'open_existing' });
  assert.deepEqual((await lW.getItems({})).items.map((i) => i.data), [{ i: 0 }, { i: 1 }, { i: 2 }]);
  const pushed = await lW.push({ i: 3 });
  assert.equal(pushed.index, 3, 'list indexes continue after restart');
  for (let n = 4; n <= 8; n++) await dW.set({ n });

  // A reconnects by itself (retry policy 200 ms .. 2 s) and catches up
  await waitForState(a, 'connected', 15000);
  await until(() => dA.data.n === 8, 15000, `A catches up (at ${dA.data.n})`);
  // B comes back
  px.resume();
  await waitForState(b, 'connected', 15000);
  await until(() => dB.data.n === 8 && addB.events.length >= 1, 15000, `B catches up (doc at ${dB.data.n})`);
  await sleep(400);
  assert.deepEqual(seenB.events.map((e) => e.n), [4, 5, 6, 7, 8], 'B: each missed update once, in order');
  assert.deepEqual(addB.events.map((e) => [e.index, e.data]), [[3, { i: 3 }]]);
  assert.deepEqual(seenA.events.map((e) => e.n), [4, 5, 6, 7, 8], 'A: each missed update once, in order');
  // both can write again, and see each other
  const back = waitFor(dB, 'updated', (e) => e.data.n === 9, 10000);
  await dA.set({ n: 9 });
  await back;
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});

test('after a restore from backup, a client that saw later events catches up and hears new writes', async () => {
  // The client saw 20 updates made after the backup; the restore loses them. The restored store's
  // event ids would otherwise start again below the client's, and the SDK would drop every new event
  // as one it already has (the document stuck at v=20 while the server holds v=100).
  const { execFileSync } = require('node:child_process');
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const name = uniq('restored');
  const a = await connect(srv, uniq('writer'));
  const obs = await connect(srv, uniq('observer'));
  const d = await a.document(name);
  await d.set({ v: 0 });
  const m = await a.map(name);
  await m.set('k1', { v: 0 });
  const backup = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-e2e-backup-')), 'chorus.backup');
  execFileSync(srv.bin, ['backup', '--data-dir', srv.dataDir, '--out', backup]);

  const od = await obs.document(name);
  const om = await obs.map(name);
  let k1 = 0; // the observer's k1, as its events left it
  om.on('itemUpdated', (e) => { if (e.item.key === 'k1') k1 = e.item.data.v; });
  for (let v = 1; v <= 20; v++) {
    await d.set({ v });
    await m.set('k1', { v });
  }
  await until(() => od.data.v === 20 && k1 === 20, 15000, 'the observer at v=20');

  await srv.kill('SIGTERM');
  fs.rmSync(srv.dataDir, { recursive: true, force: true });
  const out = execFileSync(srv.bin, ['restore', '--data-dir', srv.dataDir, backup]).toString();
  assert.match(out, /event ids moved up to \d+ and above/);
  await srv.start();
  await waitForState(obs, 'connected', 20000);

  const rest = srv.restClient().sync.v1.services(srv.creds.serviceSid);
  await rest.documents(name).update({ data: { v: 100 } });
  await rest.syncMaps(name).syncMapItems('k1').update({ data: { v: 100 } });
  await until(() => od.data.v === 100 && k1 === 100, 20000, 'the observer to hear the writes made after the restore');
  fs.rmSync(path.dirname(backup), { recursive: true, force: true });
});
