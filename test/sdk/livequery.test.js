'use strict';
// Live Query and Instant Query over Maps: client.liveQuery(index, expr) and
// client.instantQuery(index) of the official SDK, where the index is a Map's unique name or SID.
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor, waitForState } = require('../lib/harness');
const { uniq, tap, connect, expectReject, record, until } = require('./util');
const { startProxy } = require('./proxy');

tap.install();
const srv = useServer({ name: 'livequery' });
const proxies = [];
after(async () => {
  for (const p of proxies) await p.close();
});

let svcCache = null;
const rest = () => (svcCache = svcCache || srv.restClient().sync.v1.services(srv.creds.serviceSid));

const sorted = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));

test('liveQuery: initial items; items enter, change and leave as another client and REST write the map', async () => {
  const a = await connect(srv, uniq('a'));
  const b = await connect(srv, uniq('b'));
  const name = uniq('tasks');
  const m = await a.map(name);
  await m.set('t1', { status: 'open', who: { name: 'Ann' } });
  await m.set('t2', { status: 'done' });
  await m.set('t3', { status: 'open', who: { name: 'Bo' } });

  const q = await b.liveQuery(name, 'data.status == "open"');
  assert.match(q.sid, /^QY[0-9a-f]{32}$/);
  assert.deepEqual(sorted(q.getItems()), {
    t1: { status: 'open', who: { name: 'Ann' } },
    t3: { status: 'open', who: { name: 'Bo' } },
  });
  const upd = record(q, 'itemUpdated', (it) => [it.key, structuredClone(it.value)]);
  const rem = record(q, 'itemRemoved', (e) => e.key);
  // The subscription the SDK establishes for the query is a live_query one.
  await until(() => tap.socketsFor(b.__token).some((s) => s.notifications((p) => p.event_type === 'subscription_established'
    && (p.events || [p.event]).some((e) => e.object_sid === q.sid && e.object_type === 'live_query')).length > 0), 10000, 'live_query subscription');

  await m.set('t4', { status: 'done' }); // never matches
  await m.set('t5', { status: 'open' }); // enters
  await until(() => upd.events.length >= 1, 10000, 't5 enters');
  assert.deepEqual(upd.events, [['t5', { status: 'open' }]]);
  await m.set('t1', { status: 'open', who: { name: 'Ann B.' } }); // changes within
  await until(() => upd.events.length >= 2, 10000, 't1 changes');
  assert.deepEqual(upd.events[1], ['t1', { status: 'open', who: { name: 'Ann B.' } }]);
  // REST: t3 leaves, t2 enters, t5 is removed.
  const mapRest = rest().syncMaps(name);
  await mapRest.syncMapItems('t3').update({ data: { status: 'done' } });
  await mapRest.syncMapItems('t2').update({ data: { status: 'open' } });
  await mapRest.syncMapItems('t5').remove();
  await until(() => rem.events.length >= 2 && upd.events.length >= 3, 10000, 'REST changes');
  assert.deepEqual(rem.events, ['t3', 't5']);
  assert.deepEqual(upd.events[2], ['t2', { status: 'open' }]);
  assert.deepEqual(sorted(q.getItems()), { t1: { status: 'open', who: { name: 'Ann B.' } }, t2: { status: 'open' } });

  // A query by SID, with the rest of the language.
  const q2 = await b.liveQuery(m.sid, '(data.who.name contains "Ann" OR key IN ["t9"]) && key != "t2"');
  assert.deepEqual(Object.keys(q2.getItems()), ['t1']);
  const upd2 = record(q2, 'itemUpdated', (it) => it.key);
  await until(() => tap.socketsFor(b.__token).some((s) => s.notifications((p) => p.event_type === 'subscription_established'
    && (p.events || [p.event]).some((e) => e.object_sid === q2.sid)).length > 0), 10000, 'q2 subscription');
  await m.set('t9', {});
  await until(() => upd2.events.length === 1, 10000, 't9 enters q2');
  assert.deepEqual(Object.keys(q2.getItems()).sort(), ['t1', 't9']);

  // close() cancels the subscription: no more events.
  q.close();
  await until(() => tap.socketsFor(b.__token).some((s) => s.notifications((p) => p.event_type === 'subscription_canceled'
    && (p.events || [p.event]).some((e) => e.object_sid === q.sid)).length > 0), 10000, 'subscription_canceled');
  // t6 would enter q; t9 changes in q2 afterwards. Events of one Map reach a connection in order,
  // so once q2 has seen t9, q would have seen t6.
  const before = upd.events.length;
  await m.set('t6', { status: 'open' });
  await m.set('t9', { again: true });
  await until(() => upd2.events.length === 2, 10000, 't9 changes in q2');
  assert.equal(upd.events.length, before, 'no event after close()');
  assert.deepEqual(tap.allBad(), []);
  a.shutdown();
  b.shutdown();
});

test('instantQuery: search → searchResult; a new expression; another index; subscribe() makes a LiveQuery', async () => {
  const a = await connect(srv, uniq('a'));
  const n1 = uniq('people');
  const n2 = uniq('people');
  const m1 = await a.map(n1);
  const m2 = await a.map(n2);
  await m1.set('p1', { team: 'eng', lang: ['go', 'js'] });
  await m1.set('p2', { team: 'ops', lang: ['sh'] });
  await m2.set('p3', { team: 'eng' });

  const iq = await a.instantQuery(n1);
  const results = record(iq, 'searchResult', (items) => sorted(structuredClone(items)));
  await iq.search('data.team == "eng"');
  assert.deepEqual(results.events, [{ p1: { team: 'eng', lang: ['go', 'js'] } }]);
  await iq.search('data.lang in ["sh", "py"]'); // a new query
  assert.deepEqual(results.events[1], { p2: { team: 'ops', lang: ['sh'] } });
  assert.deepEqual(iq.getItems(), { p2: { team: 'ops', lang: ['sh'] } });
  await iq.search('data.team not_in ["eng", "ops"]');
  assert.deepEqual(results.events[2], {});
  iq.updateIndexName(m2.sid);
  await iq.search('data.team EQ "eng"');
  assert.deepEqual(results.events[3], { p3: { team: 'eng' } });

  const live = await iq.subscribe();
  assert.deepEqual(live.getItems(), { p3: { team: 'eng' } });
  const upd = record(live, 'itemUpdated', (it) => it.key);
  await until(() => tap.socketsFor(a.__token).some((s) => s.notifications((p) => p.event_type === 'subscription_established'
    && (p.events || [p.event]).some((e) => e.object_sid === live.sid)).length > 0), 10000, 'subscription');
  await rest().syncMaps(m2.sid).syncMapItems.create({ key: 'p4', data: { team: 'eng' } });
  await until(() => upd.events.length === 1, 10000, 'p4 enters');
  assert.deepEqual(upd.events, ['p4']);
  a.shutdown();
});

test('reconnect: a live query re-subscribes and catches up with what changed while it was away', async () => {
  const a = await connect(srv, uniq('a'));
  const px = await startProxy(srv.port);
  proxies.push(px);
  const identity = uniq('b');
  const token = srv.mintToken(identity);
  const b = srv.newClient(identity, { token, clientOptions: { cdsUri: px.baseUrl, twilsock: { uri: px.wsUrl } } });
  b.__token = token;
  await waitForState(b, 'connected', 15000);
  const name = uniq('rooms');
  const m = await a.map(name);
  await m.set('r1', { free: 'yes' });
  await m.set('r2', { free: 'yes' });
  await m.set('r3', { free: 'no' });
  const q = await b.liveQuery(name, 'data.free == "yes"');
  assert.deepEqual(Object.keys(q.getItems()).sort(), ['r1', 'r2']);
  const upd = record(q, 'itemUpdated', (it) => [it.key, structuredClone(it.value)]);
  const rem = record(q, 'itemRemoved', (e) => e.key);
  await until(() => tap.socketsFor(token).some((s) => s.notifications((p) => p.event_type === 'subscription_established'
    && (p.events || [p.event]).some((e) => e.object_sid === q.sid)).length > 0), 10000, 'subscription');

  const left = waitFor(b, 'connectionStateChanged', (st) => st !== 'connected', 10000);
  px.cut();
  await left;
  await m.set('r2', { free: 'no' }); // leaves
  await m.set('r3', { free: 'yes' }); // enters
  await m.set('r4', { free: 'no' }); // never in
  px.resume();
  await waitForState(b, 'connected', 20000);
  await until(() => rem.events.length === 1 && upd.events.length === 1, 15000, 'catch-up after the reconnect');
  assert.deepEqual(rem.events, ['r2']);
  assert.deepEqual(upd.events, [['r3', { free: 'yes' }]], 'unchanged r1 is not reported again');
  assert.deepEqual(Object.keys(q.getItems()).sort(), ['r1', 'r3']);
  // And it is live again on the new connection.
  await m.set('r1', { free: 'no' });
  await until(() => rem.events.length === 2, 10000, 'r1 leaves');
  assert.equal(rem.events[1], 'r1');
  a.shutdown();
  b.shutdown();
});

test('errors: invalid expression 54507, 30 operators 54509, 30 array items 54510, unknown index 54502', async () => {
  const a = await connect(srv, uniq('a'));
  const name = uniq('m');
  await a.map(name);
  await expectReject(a.liveQuery(name, 'data.x = "y"'), { status: 400, code: 54507 });
  await expectReject(a.liveQuery(name, 'key == y'), { status: 400, code: 54507 });
  await expectReject(a.liveQuery(name, 'nope == "y"'), { status: 400, code: 54507 });
  const ops15 = Array.from({ length: 15 }, (_, i) => `key == "${i}"`).join(' OR '); // 29 operators
  await a.liveQuery(name, ops15);
  await expectReject(a.liveQuery(name, `${ops15} AND key == "x"`), { status: 400, code: 54509 });
  const arr = `key IN [${Array.from({ length: 30 }, (_, i) => `"${i}"`).join(',')}]`;
  await expectReject(a.liveQuery(name, arr), { status: 400, code: 54510 });
  await expectReject(a.liveQuery(uniq('missing'), 'key == "a"'), { status: 400, code: 54502 });
  const iq = await a.instantQuery(name);
  await expectReject(iq.search('(key == "a"'), { status: 400, code: 54507 });
  await expectReject(iq.subscribe(), { status: 400, code: 54507 }); // nothing searched yet
  a.shutdown();
});

test('ACL: only identities that may read the map query it (runs last: enables the service ACL)', async () => {
  const s = await rest().update({ aclEnabled: true });
  assert.equal(s.aclEnabled, true);
  try {
    const name = uniq('acl-map');
    const map = await rest().syncMaps.create({ uniqueName: name });
    await rest().syncMaps(map.sid).syncMapItems.create({ key: 'k1', data: { v: 'x' } });
    const reader = uniq('reader');
    await rest().syncMaps(map.sid).syncMapPermissions(reader).update({ read: true, write: false, manage: false });
    const cr = await connect(srv, reader);
    const cn = await connect(srv, uniq('nobody'));
    const q = await cr.liveQuery(name, 'data.v == "x"');
    assert.deepEqual(q.getItems(), { k1: { v: 'x' } });
    const upd = record(q, 'itemUpdated', (it) => it.key);
    await until(() => tap.socketsFor(cr.__token).some((f) => f.notifications((p) => p.event_type === 'subscription_established'
      && (p.events || [p.event]).some((e) => e.object_sid === q.sid)).length > 0), 10000, 'subscription');
    await rest().syncMaps(map.sid).syncMapItems.create({ key: 'k2', data: { v: 'x' } });
    await until(() => upd.events.length === 1, 10000, 'k2 enters');
    await expectReject(cn.liveQuery(name, 'data.v == "x"'), { status: 403, code: 54007 });
    await expectReject(cn.liveQuery(map.sid, 'key != ""'), { status: 403, code: 54007 });
    const iq = await cn.instantQuery(name);
    await expectReject(iq.search('data.v == "x"'), { status: 403, code: 54007 });
    cr.shutdown();
    cn.shutdown();
  } finally {
    await rest().update({ aclEnabled: false });
  }
});
