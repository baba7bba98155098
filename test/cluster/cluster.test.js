'use strict';
// A 3-node Chorus cluster (PostgreSQL + NATS) behind a real nginx, driven by the official
// twilio-sync SDK and the twilio REST client (lib/cluster.js starts everything).
//
// 1. SDK clients attached directly to each node and through nginx see each other's writes.
// 2. Kill test: subscribers (through nginx and directly) on a document and a list; a steady stream
//    of writes (REST through nginx, SDK through nginx); one node is SIGKILLed mid-stream. Every
//    subscriber must end with every committed event exactly once and in order, and every
//    acknowledged write must be in PostgreSQL, read back through a surviving node's REST API.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { waitFor, waitForState, sleep, eventually } = require('../lib/harness');
const { startCluster, metrics } = require('../lib/cluster');

let cl;
before(async () => {
  cl = await startCluster({ nodes: 3 });
});
after(async () => {
  if (cl) await cl.stop();
});

const uniq = (p) => `${p}-${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`;

/** A SyncClient on `endpoint` (a node or cl.proxy) that has reached 'connected'. */
async function connect(endpoint, identity) {
  const c = endpoint.newClient(identity);
  await waitForState(c, 'connected', 15000);
  return c;
}

function bounded(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

const service = (rest) => rest.sync.v1.services(cl.creds.serviceSid);

test('clients on different nodes and through nginx see each other\'s writes', async () => {
  const rest = cl.proxy.restClient();
  const name = uniq('shared');
  const mapName = uniq('shared-map');
  await service(rest).documents.create({ uniqueName: name, data: { from: 'rest' } });
  await service(rest).syncMaps.create({ uniqueName: mapName });

  const endpoints = [...cl.nodes.map((n, i) => ({ label: `n${i}`, ep: n })), { label: 'nginx', ep: cl.proxy }];
  const clients = await Promise.all(endpoints.map(({ label, ep }) => connect(ep, `user-${label}`)));
  const docs = await Promise.all(clients.map((c) => c.document({ id: name, mode: 'open_existing' })));
  const maps = await Promise.all(clients.map((c) => c.map({ id: mapName, mode: 'open_existing' })));
  // Each client's first probe: wait until every other client has seen it (subscriptions
  // are batched and asynchronous, so retry the probe until all are established).
  await eventually(async () => {
    const probe = crypto.randomBytes(4).toString('hex');
    const seen = docs.slice(1).map((d) => waitFor(d, 'updated', (e) => e.data.probe === probe, 1500).then(() => true, () => false));
    await docs[0].set({ probe });
    return (await Promise.all(seen)).every(Boolean);
  }, 15000, 0);

  for (let w = 0; w < docs.length; w++) {
    const others = docs.filter((_, i) => i !== w);
    const seen = others.map((d) => waitFor(d, 'updated', (e) => e.data.from === endpoints[w].label && e.isLocal === false, 10000));
    await docs[w].set({ from: endpoints[w].label });
    await Promise.all(seen);
  }
  // A REST write through nginx reaches every client.
  const seenRest = docs.map((d) => waitFor(d, 'updated', (e) => e.data.from === 'rest-2', 10000));
  await service(rest).documents(name).update({ data: { from: 'rest-2' } });
  await Promise.all(seenRest);

  // A map item set through nginx reaches the direct clients.
  const added = maps.slice(0, 3).map((m) => waitFor(m, 'itemAdded', (e) => e.item.key === 'k' && e.item.data.v === 1, 10000));
  await maps[3].set('k', { v: 1 });
  await Promise.all(added);
  for (const d of docs) assert.deepEqual(d.data, { from: 'rest-2' });
  await Promise.all(clients.map((c) => c.shutdown()));
});

test('SIGKILL of a node mid-stream: every subscriber gets every event exactly once, in order', async () => {
  const victim = cl.nodes[1];
  const survivor = cl.nodes[0];
  const rest = cl.proxy.restClient();
  const docName = uniq('kill-doc');
  const listName = uniq('kill-list');
  const doc = await service(rest).documents.create({ uniqueName: docName, data: { seq: 0 } });
  const list = await service(rest).syncLists.create({ uniqueName: listName });

  // Subscribers: through nginx until the victim holds at least two of them, plus one directly on
  // each surviving node (added after the writer below).
  const subs = [];
  const addSub = async (ep, label) => {
    const c = await connect(ep, `sub-${label}`);
    const d = await c.document({ id: docName, mode: 'open_existing' });
    const l = await c.list({ id: listName, mode: 'open_existing' });
    const s = { label, c, d, l, doc: [], list: [], other: [] };
    d.on('updated', (e) => s.doc.push(e.data.seq));
    d.on('removed', () => s.other.push('document removed'));
    l.on('itemAdded', (e) => s.list.push(e.item.data.seq));
    l.on('itemUpdated', (e) => s.other.push(`itemUpdated ${e.item.index}`));
    l.on('itemRemoved', (e) => s.other.push(`itemRemoved ${e.index}`));
    subs.push(s);
  };
  // The SDK writer: a client through nginx that landed on the victim, so that its writes must
  // survive the kill too (nginx picks the upstream; retry until it is the victim).
  let wc;
  for (let i = 0; i < 8 && !wc; i++) {
    const before = (await metrics(victim)).chorus_connections;
    const c = await connect(cl.proxy, `writer${i}`);
    if ((await metrics(victim)).chorus_connections > before) wc = c;
    else await bounded(c.shutdown(), 3000, 'shutdown').catch(() => {});
  }
  assert.ok(wc, 'nginx never put the SDK writer on the victim node in 8 tries');
  const wdoc = await wc.document({ id: docName, mode: 'open_existing' });
  const wlist = await wc.list({ id: listName, mode: 'open_existing' });
  for (let i = 0; i < 9; i++) {
    await addSub(cl.proxy, `nginx${i}`);
    if (i >= 3 && (await metrics(victim)).chorus_connections >= 3) break;
  }
  const onVictim = (await metrics(victim)).chorus_connections - 1; // minus the writer
  assert.ok(onVictim >= 2, `nginx put ${onVictim} subscribers on the victim, want >= 2`);
  await addSub(survivor, 'direct-n0');
  await addSub(cl.nodes[2], 'direct-n2');

  // Warm-up: seq 0 on both objects, seen by everyone, proves the subscriptions are live.
  await service(rest).documents(doc.sid).update({ data: { seq: 0, warm: true } });
  await service(rest).syncLists(list.sid).syncListItems.create({ data: { seq: 0 } });
  await eventually(() => subs.every((s) => s.doc.includes(0) && s.list.includes(0)), 15000);
  for (const s of subs) {
    s.doc.length = 0;
    s.list.length = 0;
  }

  // Sequential writers: write k settles before write k+1 starts, so commit order is seq order.
  // Odd seqs go through REST (nginx), even ones through the SDK (nginx).
  let writing = true;
  const writer = (what, restWrite, sdkWrite) => {
    const w = { what, acked: [], failed: [], tried: [] };
    w.done = (async () => {
      for (let k = 1; writing; k++) {
        w.tried.push(k);
        try {
          await (k % 2 ? restWrite(k) : sdkWrite(k));
          w.acked.push(k);
        } catch (err) {
          w.failed.push({ k, via: k % 2 ? 'rest' : 'sdk', err: `${err.status || ''} ${err.code || ''} ${err.message}` });
        }
        await sleep(20);
      }
    })();
    return w;
  };
  const docW = writer('document',
    (k) => service(rest).documents(doc.sid).update({ data: { seq: k, via: 'rest' } }),
    (k) => wdoc.set({ seq: k, via: 'sdk' }));
  const listW = writer('list',
    (k) => service(rest).syncLists(list.sid).syncListItems.create({ data: { seq: k, via: 'rest' } }),
    (k) => wlist.push({ seq: k, via: 'sdk' }));

  await sleep(1500);
  const killedAt = { doc: docW.tried.length, list: listW.tried.length };
  const exit = await victim.kill('SIGKILL');
  assert.equal(exit.signal, 'SIGKILL');
  await sleep(3000);
  writing = false;
  await bounded(Promise.all([docW.done, listW.done]), 60000, 'writers to settle');
  const diag = () => JSON.stringify({
    killedAt,
    doc: { tried: docW.tried.length, acked: docW.acked.length, failed: docW.failed },
    list: { tried: listW.tried.length, acked: listW.acked.length, failed: listW.failed },
  });
  console.log(`kill test: ${diag()}`);
  // Writes kept flowing after the kill (nginx moved them to live nodes; the SDK reconnected).
  for (const w of [docW, listW]) {
    const after = w.acked.filter((k) => k > (w === docW ? killedAt.doc : killedAt.list) + 2);
    assert.ok(after.length >= 10, `${w.what}: ${after.length} acknowledged writes after the kill, want >= 10: ${diag()}`);
    assert.ok(w.failed.length <= 4, `${w.what}: ${w.failed.length} failed writes, want <= 4: ${diag()}`);
  }

  // PostgreSQL, through a surviving node's REST API.
  const direct = survivor.restClient();
  const stored = await service(direct).documents(doc.sid).fetch();
  const items = await service(direct).syncLists(list.sid).syncListItems.list({ pageSize: 100 });
  const storedList = items.map((it) => it.data.seq).filter((k) => k > 0);
  const lastAckedDoc = docW.acked[docW.acked.length - 1];
  assert.ok(stored.data.seq >= lastAckedDoc && docW.tried.includes(stored.data.seq),
    `stored document seq ${stored.data.seq}, want the last acknowledged (${lastAckedDoc}) or a later attempted write`);
  for (const k of listW.acked) assert.ok(storedList.includes(k), `acknowledged list write ${k} is not in PostgreSQL: ${diag()}`);
  for (let i = 1; i < storedList.length; i++) {
    assert.ok(storedList[i] > storedList[i - 1], `stored list seqs in index order are increasing: ${storedList.join(',')}`);
  }

  // Every subscriber converges on the stored state...
  await eventually(() => subs.every((s) => s.doc[s.doc.length - 1] === stored.data.seq && s.list.length >= storedList.length), 30000)
    .catch((err) => {
      throw new Error(`${err.message}\n` + subs.map((s) => `${s.label}: doc last ${s.doc[s.doc.length - 1]} (${s.doc.length}), list ${s.list.length}/${storedList.length}`).join('\n'));
    });
  await sleep(500); // and nothing more arrives
  // ...having seen every event exactly once, in order.
  for (const s of subs) {
    const who = `subscriber ${s.label}`;
    for (let i = 1; i < s.doc.length; i++) {
      assert.ok(s.doc[i] > s.doc[i - 1], `${who}: document seqs strictly increasing (no duplicates): ${s.doc.join(',')}`);
    }
    for (const k of docW.acked) assert.ok(s.doc.includes(k), `${who}: acknowledged document write ${k} missing: ${s.doc.join(',')}`);
    for (const k of s.doc) assert.ok(docW.tried.includes(k), `${who}: document seq ${k} was never written`);
    assert.deepEqual(s.list, storedList, `${who}: list events = the stored items, exactly once each, in order`);
    assert.deepEqual(s.d.data, stored.data, `${who}: final document data`);
    assert.deepEqual(s.other, [], `${who}: unexpected events`);
  }
  assert.equal(victim.running, false);
  await Promise.all([wc, ...subs.map((s) => s.c)].map((c) => bounded(c.shutdown(), 3000, 'shutdown').catch(() => {})));
});
