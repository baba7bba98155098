'use strict';
// --ws-max-queries-per-identity as the official SDK sees it: the sessions of one identity hold at most that many
// live queries together; the next is refused with 400 54419 (a 429 the SDK would retry for 90 s, and this does not
// pass with time), other identities are not held by it, and a session that ends gives its queries' places back.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/harness');
const { uniq, tap, connect, expectReject, until, sleep } = require('./util');

tap.install();
const srv = useServer({ name: 'sdk-livequery-cap', args: ['--ws-max-queries-per-identity', '3'] });

test('one identity holds at most --ws-max-queries-per-identity live queries across its sessions', async () => {
  const who = uniq('querier');
  const a = await connect(srv, who);
  const b = await connect(srv, who);
  const other = await connect(srv, uniq('other'));
  const name = uniq('tasks');
  const m = await a.map(name);
  await m.set('t1', { status: 'open' });

  const q1 = await a.liveQuery(name, 'data.status == "open"');
  await a.liveQuery(name, 'key == "t1"');
  await b.liveQuery(name, 'key == "t2"');
  await expectReject(b.liveQuery(name, 'key == "t3"'), { status: 400, code: 54419 });
  const theirs = await other.liveQuery(name, 'data.status == "open"');
  assert.deepEqual(theirs.getItems(), { t1: { status: 'open' } });

  // The queries within the cap are live.
  let entered = null;
  q1.on('itemUpdated', (it) => { entered = it.key; });
  await m.set('t4', { status: 'open' });
  await until(() => entered === 't4', 10000, 't4 enters the first query');

  await a.shutdown(); // its two queries go
  // The server lets go of a's queries once it sees the session end: until then, 54419.
  let q4 = null;
  let last = null;
  for (const deadline = Date.now() + 10000; q4 === null; await sleep(100)) {
    q4 = await b.liveQuery(name, 'key == "t4"').catch((e) => { last = e; return null; });
    assert.ok(q4 !== null || Date.now() < deadline, `no live query 10 s after the other session ended: ${last}`);
  }
  assert.deepEqual(q4.getItems(), { t4: { status: 'open' } });
  await Promise.all([b.shutdown(), other.shutdown()]);
});
