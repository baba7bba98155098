'use strict';
// REST v1 through every generation of the `twilio` Node helper library (npm aliases in
// test/package.json): create / fetch / update / list / delete of Documents, Lists, Maps and
// Streams, their items, permissions and stream messages, with data round-tripping exactly.
// twilio-node up to 3.40.0 posts every write as multipart/form-data (the `request` package's
// formData); 3.41.1 (the next release) moved to axios and application/x-www-form-urlencoded. One server for all
// versions; each client talks to it through a recording relay so the test can show which body
// encoding each version really used. Identities and keys are URL-safe: twilio-node up to 3.41.x
// puts path parameters into the URL unescaped, and 4.x+ refuse "/" and "?" in them.
const { describe, test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer } = require('../lib/harness');
const { startRecorder } = require('./recorder');

// [npm alias, body encoding its writes use]
const VERSIONS = [
  ['twilio-3-28', 'multipart/form-data'],
  ['twilio-3-40', 'multipart/form-data'],
  ['twilio-3-41', 'application/x-www-form-urlencoded'],
  ['twilio-3-84', 'application/x-www-form-urlencoded'],
  ['twilio-4', 'application/x-www-form-urlencoded'],
  ['twilio-5', 'application/x-www-form-urlencoded'],
  ['twilio', 'application/x-www-form-urlencoded'],
];

// Everything JSON can carry, and text that form encodings must not mangle.
const DATA = {
  text: 'é ü 😀 "quoted" \\ back\nnew line\r\n--boundary-- &a=b%20 +plus',
  n: 1.5,
  big: 9007199254740991,
  neg: -3,
  t: true,
  f: false,
  nil: null,
  arr: [1, 'two', { three: [3] }, []],
  obj: { nested: { deeper: {} } },
};

let env$ = null;
const env = () => (env$ = env$ || (async () => {
  const srv = await startServer({ name: 'rest-compat' });
  const rec = await startRecorder(srv.port);
  return { srv, rec };
})());

after(async () => {
  if (!env$) return;
  const { srv, rec } = await env$;
  await rec.close();
  await srv.stop();
});

const sidRe = (prefix) => new RegExp(`^${prefix}[0-9a-f]{32}$`);

async function expectRestError(promise, status, code, what) {
  const err = await promise.then(
    (v) => assert.fail(`${what}: expected ${status}/${code}, got success ${JSON.stringify(v && v.toJSON ? v.toJSON() : v)}`),
    (e) => e,
  );
  assert.equal(err.status, status, `${what}: status (${err.message})`);
  assert.equal(err.code, code, `${what}: code (${err.message})`);
}

for (const [alias, encoding] of VERSIONS) {
  const version = require(`${alias}/package.json`).version;
  describe(`twilio-node ${version} (${alias})`, () => {
    let svcSid;
    let client;
    // A fresh client and service per version, created by the first test.
    let ready$ = null;
    const ready = () => (ready$ = ready$ || (async () => {
      const { srv, rec } = await env();
      const twilio = require(alias);
      client = twilio(srv.creds.apiKey, srv.creds.apiSecret, { accountSid: srv.creds.accountSid });
      client.sync.baseUrl = rec.baseUrl;
      const s = await client.sync.v1.services.create({ friendlyName: `rest-compat ${version}` });
      assert.match(s.sid, sidRe('IS'));
      assert.equal(s.friendlyName, `rest-compat ${version}`, 'service create applied its parameters');
      svcSid = s.sid;
    })());
    const svc = () => client.sync.v1.services(svcSid);
    const tag = (p) => `${p}-${alias}`;

    test('documents and document permissions', async () => {
      await ready();
      const name = tag('doc');
      const created = await svc().documents.create({ uniqueName: name, data: DATA, ttl: 3600 });
      assert.match(created.sid, sidRe('ET'));
      assert.equal(created.uniqueName, name, 'create applied UniqueName');
      assert.deepEqual(created.data, DATA, 'create applied Data exactly');
      assert.ok(created.dateExpires instanceof Date, 'create applied Ttl');

      const empty = await svc().documents.create();
      assert.equal(empty.uniqueName, null);
      assert.deepEqual(empty.data, {});

      assert.deepEqual((await svc().documents(created.sid).fetch()).data, DATA);
      assert.equal((await svc().documents(name).fetch()).sid, created.sid);
      const upd = await svc().documents(name).update({ data: { replaced: [DATA.text] } });
      assert.deepEqual(upd.data, { replaced: [DATA.text] });
      assert.notEqual(upd.revision, created.revision);

      if (alias !== 'twilio-3-28') { // 3.28.1 has no ifMatch option (3.40.0 has)
        await expectRestError(svc().documents(name).update({ data: { stale: true }, ifMatch: created.revision }), 412, 54103, 'stale If-Match');
        const cond = await svc().documents(name).update({ data: { cond: true }, ifMatch: upd.revision });
        assert.deepEqual(cond.data, { cond: true }, 'update with the current If-Match');
      }

      const all = await svc().documents.list({ pageSize: 1 });
      assert.deepEqual(all.map((d) => d.sid).sort(), [created.sid, empty.sid].sort(), 'list pages through both');

      const perm = await svc().documents(name).documentPermissions('alice.1').update({ read: true, write: false, manage: true });
      assert.deepEqual([perm.identity, perm.read, perm.write, perm.manage], ['alice.1', true, false, true]);
      const fetchedPerm = await svc().documents(name).documentPermissions('alice.1').fetch();
      assert.deepEqual([fetchedPerm.read, fetchedPerm.write, fetchedPerm.manage], [true, false, true]);
      assert.deepEqual((await svc().documents(name).documentPermissions.list()).map((p) => p.identity), ['alice.1']);
      assert.equal(await svc().documents(name).documentPermissions('alice.1').remove(), true);
      assert.deepEqual(await svc().documents(name).documentPermissions.list(), []);

      assert.equal(await svc().documents(name).remove(), true);
      assert.equal(await svc().documents(empty.sid).remove(), true);
      await expectRestError(svc().documents(name).fetch(), 404, 20404, 'fetch after remove');
    });

    test('lists, list items and list permissions', async () => {
      await ready();
      const name = tag('list');
      const list = await svc().syncLists.create({ uniqueName: name, ttl: 3600 });
      assert.match(list.sid, sidRe('ES'));
      assert.equal(list.uniqueName, name, 'create applied UniqueName');
      assert.ok(list.dateExpires instanceof Date, 'create applied Ttl');
      assert.equal((await svc().syncLists(name).fetch()).sid, list.sid);
      const updList = await svc().syncLists(name).update({ ttl: 0 });
      assert.equal(updList.dateExpires, null, 'update applied Ttl 0');

      const items = [];
      for (let i = 0; i < 5; i++) items.push(await svc().syncLists(name).syncListItems.create({ data: { i, DATA } }));
      assert.deepEqual(items.map((it) => it.index), [0, 1, 2, 3, 4]);
      assert.deepEqual(items[3].data, { i: 3, DATA });
      assert.deepEqual((await svc().syncLists(name).syncListItems(2).fetch()).data, { i: 2, DATA });
      const updItem = await svc().syncLists(name).syncListItems(2).update({ data: { i: 'two' } });
      assert.deepEqual(updItem.data, { i: 'two' });

      const asc = await svc().syncLists(name).syncListItems.list({ pageSize: 2 });
      assert.deepEqual(asc.map((it) => it.index), [0, 1, 2, 3, 4], 'three pages of 2, ascending');
      const desc = await svc().syncLists(name).syncListItems.list({ order: 'desc', from: '3', bounds: 'exclusive', pageSize: 2 });
      assert.deepEqual(desc.map((it) => it.index), [2, 1, 0], 'Order/From/Bounds in the query');

      assert.equal(await svc().syncLists(name).syncListItems(0).remove(), true);
      await expectRestError(svc().syncLists(name).syncListItems(0).fetch(), 404, 20404, 'item after remove');

      const perm = await svc().syncLists(name).syncListPermissions('bob').update({ read: true, write: true, manage: false });
      assert.deepEqual([perm.read, perm.write, perm.manage], [true, true, false]);
      assert.deepEqual((await svc().syncLists(name).syncListPermissions.list()).map((p) => p.identity), ['bob']);
      assert.equal(await svc().syncLists(name).syncListPermissions('bob').remove(), true);

      assert.deepEqual((await svc().syncLists.list()).map((l) => l.sid), [list.sid]);
      assert.equal(await svc().syncLists(name).remove(), true);
      await expectRestError(svc().syncLists(name).fetch(), 404, 20404, 'list after remove');
    });

    test('maps, map items and map permissions', async () => {
      await ready();
      const name = tag('map');
      const map = await svc().syncMaps.create({ uniqueName: name });
      assert.match(map.sid, sidRe('MP'));
      assert.equal(map.uniqueName, name, 'create applied UniqueName');
      assert.equal((await svc().syncMaps(name).fetch()).sid, map.sid);
      const updMap = await svc().syncMaps(name).update({ ttl: 3600 });
      assert.ok(updMap.dateExpires instanceof Date, 'update applied Ttl');

      const keys = ['a', 'k-2.x_y~', 'c', 'd'];
      for (const key of keys) {
        const it = await svc().syncMaps(name).syncMapItems.create({ key, data: { key, DATA } });
        assert.equal(it.key, key, 'create applied Key');
        assert.deepEqual(it.data, { key, DATA }, 'create applied Data exactly');
      }
      assert.deepEqual((await svc().syncMaps(name).syncMapItems('k-2.x_y~').fetch()).data, { key: 'k-2.x_y~', DATA });
      const upd = await svc().syncMaps(name).syncMapItems('c').update({ data: { c: DATA.arr } });
      assert.deepEqual(upd.data, { c: DATA.arr });
      await expectRestError(svc().syncMaps(name).syncMapItems.create({ key: 'a', data: {} }), 409, 54208, 'duplicate key');

      const all = await svc().syncMaps(name).syncMapItems.list({ pageSize: 2 });
      assert.deepEqual(all.map((it) => it.key), [...keys].sort(), 'two pages of 2');
      const desc = await svc().syncMaps(name).syncMapItems.list({ order: 'desc', from: 'c', bounds: 'inclusive' });
      assert.deepEqual(desc.map((it) => it.key), ['c', 'a']);

      assert.equal(await svc().syncMaps(name).syncMapItems('k-2.x_y~').remove(), true);
      await expectRestError(svc().syncMaps(name).syncMapItems('k-2.x_y~').fetch(), 404, 20404, 'item after remove');

      const perm = await svc().syncMaps(name).syncMapPermissions('carol').update({ read: false, write: true, manage: true });
      assert.deepEqual([perm.read, perm.write, perm.manage], [false, true, true]);
      assert.deepEqual((await svc().syncMaps(name).syncMapPermissions('carol').fetch()).write, true);
      assert.equal(await svc().syncMaps(name).syncMapPermissions('carol').remove(), true);

      assert.equal(await svc().syncMaps(name).remove(), true);
      await expectRestError(svc().syncMaps(name).fetch(), 404, 20404, 'map after remove');
    });

    test('streams and stream messages', async () => {
      await ready();
      const name = tag('stream');
      const stream = await svc().syncStreams.create({ uniqueName: name, ttl: 3600 });
      assert.match(stream.sid, sidRe('TO'));
      assert.equal(stream.uniqueName, name, 'create applied UniqueName');
      assert.ok(stream.dateExpires instanceof Date, 'create applied Ttl');
      assert.equal((await svc().syncStreams(name).fetch()).sid, stream.sid);
      const upd = await svc().syncStreams(name).update({ ttl: 0 });
      assert.equal(upd.dateExpires, null, 'update applied Ttl 0');

      const msg = await svc().syncStreams(name).streamMessages.create({ data: DATA });
      assert.match(msg.sid, sidRe('TZ'));
      assert.deepEqual(msg.data, DATA, 'message Data round-trips exactly');
      await expectRestError(svc().syncStreams(name).streamMessages.create({ data: { x: 'y'.repeat(5000) } }), 413, 54006, 'message over 4 KiB');

      assert.deepEqual((await svc().syncStreams.list()).map((s) => s.sid), [stream.sid]);
      assert.equal(await svc().syncStreams(name).remove(), true);
      await expectRestError(svc().syncStreams(name).fetch(), 404, 20404, 'stream after remove');
    });

    test(`writes were sent as ${encoding}, paging parameters in the query`, async () => {
      await ready();
      const { rec } = await env();
      const mine = rec.requests.filter((r) => r.userAgent.includes(`twilio-node/${version} `));
      assert.ok(mine.length > 50, `requests of ${version} seen by the relay: ${mine.length}`);
      const posts = mine.filter((r) => r.method === 'POST');
      assert.ok(posts.length > 20);
      for (const r of posts) {
        assert.equal(r.contentType.split(';')[0].trim(), encoding, `POST ${r.path} Content-Type ${r.contentType}`);
        assert.equal([...r.query.keys()].length, 0, `POST ${r.path} has no query parameters`);
      }
      const paged = mine.filter((r) => r.method === 'GET' && r.query.get('PageSize') === '2');
      assert.ok(paged.length >= 5, `GETs with PageSize=2 in the query: ${paged.length}`);
      assert.ok(mine.some((r) => r.method === 'GET' && r.query.get('Order') === 'desc' && r.query.get('Bounds') === 'exclusive'));
      for (const r of mine.filter((x) => x.method === 'DELETE')) {
        assert.equal([...r.query.keys()].length, 0, `DELETE ${r.path} has no parameters`);
      }
    });
  });
}
