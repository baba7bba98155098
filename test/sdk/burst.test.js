'use strict';
// A client that falls behind its events: while its event loop is blocked, hundreds of list items
// are added through REST, the server's socket buffers fill and its send queue grows. When the
// client reads again, the server sends queued events of one type several to a notification
// ("events" array, event protocol 4; internal/gateway/merge.go): live events, or, when the SDK
// re-establishes its subscription after the stall, the replayed ones. The official SDK must
// apply every one of them, once and in order.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { Worker } = require('node:worker_threads');
const { useServer } = require('../lib/harness');
const { uniq, tap, connect, record, until } = require('./util');

tap.install();
const srv = useServer({ name: 'burst' });

const ITEMS = 600;
const PAD = 'x'.repeat(12 * 1024); // 600 × 12 KiB: more than loopback buffers hold (~4 MiB), less than they and the 8 MiB send queue together

// writer runs in a worker thread, so it keeps writing while the main thread (the SDK's) is blocked.
const writer = `
const { workerData, parentPort } = require('node:worker_threads');
const { url, auth, items, pad, flag } = workerData;
const done = new Int32Array(flag);
(async () => {
  let next = 0, failed = null;
  async function run() {
    while (next < items && !failed) {
      const n = next++;
      const body = new URLSearchParams({ Data: JSON.stringify({ n, pad }) });
      const res = await fetch(url, { method: 'POST', headers: { Authorization: auth }, body });
      if (res.status !== 201) failed = 'HTTP ' + res.status + ' ' + (await res.text());
    }
  }
  await Promise.all(Array.from({ length: 16 }, run));
  parentPort.postMessage(failed);
  Atomics.store(done, 0, 1);
  Atomics.notify(done, 0);
})();
`;

test('a client blocked during a burst of 600 list items gets every itemAdded once, in order, some merged on the wire', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('burst');
  const list = await a.list(name);
  const added = record(list, 'itemAdded', (e) => ({ index: e.item.index, n: e.item.data.n, local: e.isLocal }));

  const flag = new SharedArrayBuffer(4);
  const auth = 'Basic ' + Buffer.from(`${srv.creds.accountSid}:${srv.creds.authToken}`).toString('base64');
  const url = `${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}/Lists/${list.sid}/Items`;
  const w = new Worker(writer, { eval: true, workerData: { url, auth, items: ITEMS, pad: PAD, flag } });
  const result = new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  // Block this thread (and with it the SDK's socket) until the worker has written everything.
  const waited = Atomics.wait(new Int32Array(flag), 0, 0, 60000);
  assert.notEqual(waited, 'timed-out', 'the writer finished within 60 s');
  assert.equal(await result, null, 'every REST add answered 201');
  await w.terminate();

  await until(() => added.events.length >= ITEMS, 30000, `${ITEMS} itemAdded events`);
  const got = added.events;
  assert.equal(got.length, ITEMS, 'no event twice');
  assert.ok(got.every((e) => !e.local));
  for (let i = 1; i < got.length; i++) assert.ok(got[i].index > got[i - 1].index, `itemAdded in index order at ${i}`);
  assert.deepEqual(got.map((e) => e.n).sort((x, y) => x - y), Array.from({ length: ITEMS }, (_, i) => i), 'every item once');
  // The items as stored agree with what the events said.
  // Pages of at most 100 items, as Twilio's (the SDK's getItems docs), whatever pageSize asks.
  let page = await list.getItems({ pageSize: 1000 });
  const stored = [];
  for (;;) {
    assert.ok(page.items.length <= 100, `a page of ${page.items.length} items, want at most 100`);
    stored.push(...page.items);
    if (!page.hasNextPage) break;
    page = await page.nextPage();
  }
  assert.deepEqual(stored.map((it) => [it.index, it.data.n]), got.map((e) => [e.index, e.n]));

  // The burst reached the client merged: at least one notification carried several of its events.
  const frames = tap.socketsForAny([a.__token]).flatMap((s) =>
    s.notifications((p) => p.event_type === 'list_item_added' && Array.isArray(p.events) && p.events.some((e) => e.list_sid === list.sid)));
  const merged = frames.filter((f) => f.payload.events.length > 1);
  assert.ok(merged.length > 0, `some of the ${frames.length} list_item_added notifications carried several events`);
  assert.equal(frames.reduce((n, f) => n + f.payload.events.length, 0) +
    tap.socketsForAny([a.__token]).flatMap((s) => s.notifications((p) => p.event_type === 'list_item_added' && p.event && p.event.list_sid === list.sid)).length,
  ITEMS, 'every event on the wire once');
  assert.deepEqual(tap.allBad(), []);
});
