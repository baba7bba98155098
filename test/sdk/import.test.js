'use strict';
// `chorus import` from one Chorus into a fresh data directory: the official SDK, connected to the
// imported server, opens the objects by unique name and sees their data under the source's SIDs,
// and live updates flow on them (the imported event ids are a valid baseline for subscriptions).
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startServer, buildChorus, defaultCreds, waitFor } = require('../lib/harness');
const { connect, until } = require('./util');
const { RawClient } = require('./raw');

const creds = defaultCreds('import-source');
const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
});

test('objects imported from another Chorus open by unique name in the SDK, with their data, and stay live', async () => {
  const src = await startServer({ name: 'import-src', creds });
  servers.push(src);
  const rest = src.restClient().sync.v1.services(creds.serviceSid);
  const docName = 'imported doc — café ☕';
  const doc = await rest.documents.create({ uniqueName: docName, data: { board: ['x', null, 'o'], n: 1 }, ttl: 3600 });
  await rest.documents(doc.sid).update({ data: { board: ['x', 'x', 'o'], n: 2 } });
  const listName = 'a list ü';
  const list = await rest.syncLists.create({ uniqueName: listName });
  for (let i = 0; i < 4; i++) await rest.syncLists(list.sid).syncListItems.create({ data: { i } });
  await rest.syncLists(list.sid).syncListItems(1).remove(); // a gap: indexes 0, 2, 3
  const mapName = 'a map ☃';
  const map = await rest.syncMaps.create({ uniqueName: mapName });
  await rest.syncMaps(map.sid).syncMapItems.create({ key: 'k 1 é', data: { v: 'one' } });
  await rest.syncMaps(map.sid).syncMapItems.create({ key: 'k 2', data: { v: 'two' } });
  // A client of the source knows the document and the map at their latest event ids.
  const seen = {};
  {
    const c = new RawClient(src.wsUrl);
    await c.open(src.mintToken('old-client'));
    for (const [kind, sid] of [['Documents', doc.sid], ['Maps', map.sid]]) {
      const r = await c.http('GET', `/v3/${kind}/${sid}`);
      assert.equal(r.status, 200);
      seen[sid] = r.body.last_event_id;
      assert.ok(seen[sid] > 0);
    }
    c.close();
  }
  await src.closeClients();

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-import-'));
  const out = execFileSync(buildChorus(), ['import', '--from', src.baseUrl, '--data-dir', dataDir, '--json'], {
    env: {
      ...process.env,
      TWILIO_ACCOUNT_SID: creds.accountSid,
      TWILIO_API_KEY: creds.apiKey,
      TWILIO_API_SECRET: creds.apiSecret,
      TWILIO_AUTH_TOKEN: '',
      CHORUS_STORE_URL: '',
    },
    encoding: 'utf8',
    timeout: 60000,
  });
  const report = JSON.parse(out);
  assert.equal(report.objects.created, 3, out);
  assert.equal(report.items.created, 5, out);

  const dst = await startServer({ name: 'import-dst', creds, dataDir });
  servers.push(dst);
  const a = await connect(dst, 'alice');
  const d = await a.document({ id: docName, mode: 'open_existing' });
  assert.equal(d.sid, doc.sid);
  assert.deepEqual(d.data, { board: ['x', 'x', 'o'], n: 2 });
  const l = await a.list({ id: listName, mode: 'open_existing' });
  assert.equal(l.sid, list.sid);
  const page = await l.getItems({ pageSize: 10 });
  assert.deepEqual(page.items.map((it) => [it.index, it.data]), [[0, { i: 0 }], [2, { i: 2 }], [3, { i: 3 }]]);
  const m = await a.map({ id: mapName, mode: 'open_existing' });
  assert.equal(m.sid, map.sid);
  assert.deepEqual((await m.get('k 1 é')).data, { v: 'one' });

  // Live on the target: another client's writes reach alice, a push continues after index 3.
  const b = await connect(dst, 'bob');
  const d2 = await b.document({ id: docName, mode: 'open_existing' });
  const updated = waitFor(d, 'updated', (e) => e.data.n === 3, 10000);
  await d2.set({ board: [], n: 3 });
  await updated;
  const added = waitFor(l, 'itemAdded', (e) => e.item.data.i === 4, 10000);
  const pushed = await (await b.list({ id: listName, mode: 'open_existing' })).push({ i: 4 });
  assert.equal(pushed.index, 4);
  await added;

  // Cut-over: the source's client resubscribes on the target with the event ids it had. The target's
  // ids are above them, so it is caught up from current state instead of ignoring later events.
  const c = new RawClient(dst.wsUrl);
  await c.open(dst.mintToken('old-client'));
  try {
    const corr = Date.now();
    const sub = await c.http('POST', '/v4/Subscriptions', {
      body: { event_protocol_version: 4, action: 'establish', correlation_id: corr, retried_requests: 0, ttl_in_s: -1,
        requests: [{ object_sid: doc.sid, object_type: 'document', last_event_id: seen[doc.sid] },
          { object_sid: map.sid, object_type: 'map', last_event_id: seen[map.sid] }] },
    });
    assert.equal(sub.status, 200);
    const events = (f) => (f.payload.events || (f.payload.event ? [f.payload.event] : []));
    const established = () => c.frames.filter((f) => f.header.method === 'notification' && f.payload.event_type === 'subscription_established')
      .flatMap(events);
    await until(() => established().length === 2, 10000, 'both subscriptions established');
    const replayed = c.frames.filter((f) => f.header.method === 'notification' && f.payload.correlation_id === corr)
      .flatMap((f) => events(f).map((e) => ({ ...e, type: f.payload.event_type })));
    const docEvents = replayed.filter((e) => e.type === 'document_updated');
    assert.equal(docEvents.length, 1, JSON.stringify(replayed));
    assert.ok(docEvents[0].id > seen[doc.sid], `replayed id ${docEvents[0].id} > ${seen[doc.sid]}`);
    assert.deepEqual(docEvents[0].document_data, { board: [], n: 3 });
    const mapEvents = replayed.filter((e) => e.type === 'map_item_updated');
    assert.deepEqual(mapEvents.map((e) => e.item_key).sort(), ['k 1 é', 'k 2']);
    assert.ok(mapEvents.every((e) => e.id > seen[map.sid]));
    for (const e of established()) assert.ok(e.last_event_id > seen[e.object_sid]);
  } finally {
    c.close();
  }
});
