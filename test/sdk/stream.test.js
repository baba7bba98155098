'use strict';
// SyncStream: publishMessage/messagePublished, size limit, setTtl, removeStream (spec §7.4,
// checklist 45–47).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor, sleep } = require('../lib/harness');
const { uniq, tap, connect, expectReject, record, until, established } = require('./util');

tap.install();
const srv = useServer({ name: 'stream' });

test('publishMessage → {sid TZ…, data}; messagePublished locally (isLocal true) and on another client with the same sid/data', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('stream');
  const sa = await a.stream(name);
  assert.match(sa.sid, /^TO[0-9a-f]{32}$/);
  assert.equal(sa.uniqueName, name);
  assert.match(sa.uri, /^https?:\/\/[^/]+\/.+/);
  const sb = await b.stream({ id: name, mode: 'open_existing' });
  assert.equal(sb.sid, sa.sid);
  await established(b, sb.sid); // no replay for streams: publish only once B is subscribed
  const pa = record(sa, 'messagePublished');
  const pb = record(sb, 'messagePublished');
  const msg = await sa.publishMessage({ hello: 'world', n: 1 });
  assert.match(msg.sid, /^TZ[0-9a-f]{32}$/);
  assert.deepEqual(msg.data, { hello: 'world', n: 1 });
  await until(() => pb.events.length >= 1, 10000, 'remote messagePublished');
  const remote = pb.events[0];
  assert.equal(remote.isLocal, false);
  assert.equal(remote.message.sid, msg.sid);
  assert.deepEqual(remote.message.data, { hello: 'world', n: 1 });
  assert.ok(pa.events.some((e) => e.isLocal === true && e.message.sid === msg.sid), 'publisher gets its local event');
  // the publisher may also get its own echo (isLocal false), but never a different message
  assert.ok(pa.events.every((e) => e.message.sid === msg.sid));
  await sleep(200);
  assert.equal(pb.events.length, 1, 'exactly one event on the subscriber');
});

test('20 messages arrive at a subscriber in publish order, each once', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('many');
  const sa = await a.stream(name);
  const sb = await b.stream({ id: name, mode: 'open_existing' });
  // make sure B's subscription is live before publishing (streams have no replay)
  const probe = waitFor(sb, 'messagePublished', (e) => e.message.data.probe === true, 10000);
  const probeTimer = setInterval(() => sa.publishMessage({ probe: true }).catch(() => {}), 300);
  try {
    await probe;
  } finally {
    clearInterval(probeTimer);
  }
  await sleep(400);
  const got = record(sb, 'messagePublished');
  const sids = [];
  for (let i = 0; i < 20; i++) sids.push((await sa.publishMessage({ i })).sid);
  await until(() => got.events.filter((e) => e.message.data.i !== undefined).length >= 20, 10000, '20 messages');
  await sleep(200);
  const received = got.events.filter((e) => e.message.data.i !== undefined);
  assert.deepEqual(received.map((e) => e.message.data.i), Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(received.map((e) => e.message.sid), sids);
});

test('stream message over 4 KiB → 413 / 54006; exactly 4 KiB is accepted; connection stays usable', async () => {
  const a = await connect(srv, uniq('a'));
  const s = await a.stream(uniq('big'));
  const exact = { s: 'x'.repeat(4096 - '{"s":""}'.length) };
  assert.equal(JSON.stringify(exact).length, 4096);
  await s.publishMessage(exact);
  await expectReject(s.publishMessage({ s: 'x'.repeat(4097 - '{"s":""}'.length) }), { status: 413, code: 54006 });
  await expectReject(s.publishMessage({ s: 'y'.repeat(10000) }), { status: 413, code: 54006 });
  const ok = await s.publishMessage({ small: true });
  assert.match(ok.sid, /^TZ/);
  assert.equal(a.connectionState, 'connected');
  assert.equal(tap.socketsFor(a.__token).length, 1, 'no reconnect');
});

test('setTtl sets dateExpires; removeStream → removed locally and remotely; then 404', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('rms');
  const sa = await a.stream(name);
  const t0 = Date.now();
  await sa.setTtl(90);
  assert.ok(Math.abs(Date.parse(sa.dateExpires) - (t0 + 90000)) < 5000, `dateExpires ${sa.dateExpires}`);
  const sb = await b.stream({ id: name, mode: 'open_existing' });
  assert.ok(Math.abs(Date.parse(sb.dateExpires) - (t0 + 90000)) < 5000);
  const lr = waitFor(sa, 'removed', () => true, 10000);
  const rr = waitFor(sb, 'removed', () => true, 10000);
  await sa.removeStream();
  assert.equal((await lr).isLocal, true);
  assert.equal((await rr).isLocal, false);
  const c = await connect(srv, uniq('c'));
  await expectReject(c.stream({ id: name, mode: 'open_existing' }), { status: 404, codes: [54250, 54300] });
});

test('stream open modes: create_new duplicate → 409 / 54301; anonymous stream', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('dups');
  await a.stream({ id: name, mode: 'create_new' });
  await expectReject(a.stream({ id: name, mode: 'create_new' }), { status: 409, code: 54301 });
  const anon = await a.stream();
  assert.match(anon.sid, /^TO[0-9a-f]{32}$/);
  assert.equal(anon.uniqueName, null);
});

test('close() on a stream stops delivery to that client', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('cls');
  const sa = await a.stream(name);
  const sb = await b.stream({ id: name, mode: 'open_existing' });
  const first = waitFor(sb, 'messagePublished', () => true, 10000);
  const timer = setInterval(() => sa.publishMessage({ warm: true }).catch(() => {}), 300);
  try {
    await first;
  } finally {
    clearInterval(timer);
  }
  sb.close();
  const [sock] = tap.socketsFor(b.__token);
  await until(() => sock.notifications((p) => p.event_type === 'subscription_canceled').length >= 1, 5000, 'subscription_canceled');
  const after = Date.now();
  await sa.publishMessage({ late: true });
  await sleep(500);
  const late = sock.notifications((p, f) => f.t > after && p.event_type === 'stream_message_published');
  assert.deepEqual(late, []);
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
