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
const { connect } = require('./util');

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
});
