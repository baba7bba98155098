'use strict';
// twilio-sync 0.5–0.7 send CDS calls (and the EMS token exchange) as plain HTTP to cdsUri whenever
// their websocket is not connected (twilio-transport's XMLHttpRequest fallback). Here the socket can
// never connect (its URL is a closed loopback port), so everything the client does goes over HTTP
// to Chorus: the exchange, creating and reading a document, a list and a map, and writing them.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { useServer, freePort } = require('../lib/harness');

const srv = useServer({ name: 'sdk-compat-http' });

for (const alias of ['twilio-sync-0-5', 'twilio-sync-0-7']) {
  test(`${alias}: CDS over plain HTTP while the socket is down`, async () => {
    const pkgDir = path.dirname(require.resolve(`${alias}/package.json`));
    const { SyncClient } = require(alias);
    const Twilsock = require(require.resolve('twilsock', { paths: [pkgDir] }));
    const { EmsClient } = require(require.resolve('twilio-ems-client', { paths: [pkgDir] }));
    const token = srv.mintToken(`${alias}-http`);
    const opts = { logLevel: 'silent', Sync: { cdsUri: srv.baseUrl }, Twilsock: { uri: `ws://127.0.0.1:${await freePort()}` } };
    opts.twilsockClient = new Twilsock(token, opts);
    opts.emsClient = new EmsClient({ emsClient: { url: `${srv.baseUrl}/v1/token` }, twilsockClient: opts.twilsockClient });
    const client = new SyncClient(token, opts);
    try {
      assert.notEqual(client.connectionState, 'connected');
      const doc = await client.document(`${alias}-http-doc`);
      await doc.set({ over: 'http' });
      const list = await client.list(`${alias}-http-list`);
      await list.push({ i: 1 });
      const map = await client.map(`${alias}-http-map`);
      await map.set('k', { v: 1 });
      await map.set('k', { v: 2 }); // 0.5: POST, 409 with links.item, then an update
      const page = await map.getItems({ pageSize: 5 });
      assert.equal(page.items.length, 1);
      assert.notEqual(client.connectionState, 'connected', 'the socket must not have been used');

      const svc = srv.restClient().sync.v1.services(srv.creds.serviceSid);
      assert.deepEqual((await svc.documents(`${alias}-http-doc`).fetch()).data, { over: 'http' });
      assert.deepEqual((await svc.syncLists(`${alias}-http-list`).syncListItems.list()).map((x) => x.data), [{ i: 1 }]);
      assert.deepEqual((await svc.syncMaps(`${alias}-http-map`).syncMapItems('k').fetch()).data, { v: 2 });
    } finally {
      await Promise.race([client.shutdown().catch(() => {}), new Promise((r) => setTimeout(r, 3000))]);
    }
  });
}

test('plain-HTTP CDS refuses requests without a valid token and has no subscriptions', async () => {
  const r1 = await fetch(`${srv.baseUrl}/v3/Documents`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  assert.equal(r1.status, 401);
  const r2 = await fetch(`${srv.baseUrl}/v3/Documents/x`, { headers: { 'X-Twilio-Token': 'a.b.c' } });
  assert.equal(r2.status, 401);
  const r3 = await fetch(`${srv.baseUrl}/v4/Subscriptions`, { method: 'POST', headers: { 'X-Twilio-Token': srv.mintToken('x') }, body: '{}' });
  assert.notEqual(r3.status, 200);
});
