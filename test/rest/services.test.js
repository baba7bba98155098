'use strict';
// REST v1 Services (operations 1-5) through the official `twilio` Node helper library, plus the
// two credential styles and the "default" service alias.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, twilio } = require('../lib/harness');
const { sidRe } = require('./util');

const { RestException } = twilio;
const srv = useServer({ name: 'rest-services' });

async function expectRestError(promise, status, code, what = '') {
  const err = await promise.then(
    (v) => assert.fail(`${what}: expected RestException ${status}/${code}, got success ${JSON.stringify(v && v.toJSON ? v.toJSON() : v)}`),
    (e) => e,
  );
  assert.ok(err instanceof RestException, `${what}: expected a RestException, got ${err && err.stack}`);
  assert.equal(err.status, status, `${what}: status (message ${JSON.stringify(err.message)}, code ${err.code})`);
  assert.equal(err.code, code, `${what}: code (message ${JSON.stringify(err.message)})`);
  assert.equal(err.moreInfo, `https://www.twilio.com/docs/errors/${code}`, `${what}: moreInfo`);
  assert.equal(typeof err.message, 'string');
  assert.ok(err.message.length > 0, `${what}: message is empty`);
  return err;
}

function assertServiceShape(s, base) {
  assert.match(s.sid, sidRe('IS'));
  assert.equal(s.accountSid, srv.creds.accountSid);
  const url = `${base}/v1/Services/${s.sid}`;
  assert.equal(s.url, url);
  assert.deepEqual(s.links, {
    documents: `${url}/Documents`,
    lists: `${url}/Lists`,
    maps: `${url}/Maps`,
    streams: `${url}/Streams`,
  });
  assert.ok(s.dateCreated instanceof Date && !Number.isNaN(s.dateCreated.getTime()), `dateCreated ${s.dateCreated}`);
  assert.ok(s.dateUpdated instanceof Date && !Number.isNaN(s.dateUpdated.getTime()), `dateUpdated ${s.dateUpdated}`);
  assert.ok(s.dateUpdated.getTime() >= s.dateCreated.getTime(), 'dateUpdated >= dateCreated');
  // Twilio's date format has whole seconds.
  assert.equal(s.dateCreated.getUTCMilliseconds(), 0);
  for (const f of ['webhooksFromRestEnabled', 'reachabilityWebhooksEnabled', 'aclEnabled', 'reachabilityDebouncingEnabled']) {
    assert.equal(typeof s[f], 'boolean', `${f} is a boolean`);
  }
  assert.equal(typeof s.reachabilityDebouncingWindow, 'number');
}

const flags = (s) => ({
  friendlyName: s.friendlyName,
  webhookUrl: s.webhookUrl,
  webhooksFromRestEnabled: s.webhooksFromRestEnabled,
  reachabilityWebhooksEnabled: s.reachabilityWebhooksEnabled,
  aclEnabled: s.aclEnabled,
  reachabilityDebouncingEnabled: s.reachabilityDebouncingEnabled,
  reachabilityDebouncingWindow: s.reachabilityDebouncingWindow,
});

test('services.create with every flag, fetch, update every flag, partial update, remove', async () => {
  const client = srv.restClient();
  const t0 = Date.now();
  const created = await client.sync.v1.services.create({
    friendlyName: 'Every flag é',
    webhookUrl: 'https://hooks.example.com/sync?x=1',
    reachabilityWebhooksEnabled: true,
    aclEnabled: true,
    reachabilityDebouncingEnabled: true,
    reachabilityDebouncingWindow: 2500,
    webhooksFromRestEnabled: true,
  });
  assertServiceShape(created, srv.baseUrl);
  assert.deepEqual(flags(created), {
    friendlyName: 'Every flag é',
    webhookUrl: 'https://hooks.example.com/sync?x=1',
    webhooksFromRestEnabled: true,
    reachabilityWebhooksEnabled: true,
    aclEnabled: true,
    reachabilityDebouncingEnabled: true,
    reachabilityDebouncingWindow: 2500,
  });
  assert.equal(created.uniqueName, null, 'a service created through REST has no unique name');
  assert.ok(Math.abs(created.dateCreated.getTime() - t0) < 5000, `dateCreated ${created.dateCreated.toISOString()} near now`);

  const fetched = await client.sync.v1.services(created.sid).fetch();
  assert.deepEqual(fetched.toJSON(), created.toJSON());

  const updated = await client.sync.v1.services(created.sid).update({
    friendlyName: 'Renamed',
    webhookUrl: 'http://127.0.0.1:9/hook',
    reachabilityWebhooksEnabled: false,
    aclEnabled: false,
    reachabilityDebouncingEnabled: false,
    reachabilityDebouncingWindow: 30000,
    webhooksFromRestEnabled: false,
  });
  assertServiceShape(updated, srv.baseUrl);
  assert.equal(updated.sid, created.sid);
  assert.deepEqual(flags(updated), {
    friendlyName: 'Renamed',
    webhookUrl: 'http://127.0.0.1:9/hook',
    webhooksFromRestEnabled: false,
    reachabilityWebhooksEnabled: false,
    aclEnabled: false,
    reachabilityDebouncingEnabled: false,
    reachabilityDebouncingWindow: 30000,
  });
  assert.equal(updated.dateCreated.getTime(), created.dateCreated.getTime(), 'dateCreated is immutable');

  // A partial update touches only the fields sent.
  const partial = await client.sync.v1.services(created.sid).update({ aclEnabled: true });
  assert.deepEqual(flags(partial), { ...flags(updated), aclEnabled: true });
  assert.deepEqual(flags(await client.sync.v1.services(created.sid).fetch()), flags(partial));

  // The instance helpers (instance.update/fetch/remove) go through the same context.
  const viaInstance = await partial.update({ friendlyName: 'via instance' });
  assert.equal(viaInstance.friendlyName, 'via instance');

  assert.equal(await client.sync.v1.services(created.sid).remove(), true);
  await expectRestError(client.sync.v1.services(created.sid).fetch(), 404, 20404, 'fetch removed service');
  await expectRestError(client.sync.v1.services(created.sid).remove(), 404, 20404, 'remove removed service');
  await expectRestError(client.sync.v1.services(created.sid).update({ friendlyName: 'x' }), 404, 20404, 'update removed service');
  await expectRestError(client.sync.v1.services(created.sid).documents.list(), 404, 20404, 'documents of removed service');
});

test('services.create with no parameters takes the documented defaults', async () => {
  const client = srv.restClient();
  const s = await client.sync.v1.services.create();
  assertServiceShape(s, srv.baseUrl);
  assert.deepEqual(flags(s), {
    friendlyName: null,
    webhookUrl: null,
    webhooksFromRestEnabled: false,
    reachabilityWebhooksEnabled: false,
    aclEnabled: false,
    reachabilityDebouncingEnabled: false,
    reachabilityDebouncingWindow: 5000,
  });
  await client.sync.v1.services(s.sid).remove();
});

test('removing a service removes its objects; the SIDs stay unknown afterwards', async () => {
  const client = srv.restClient();
  const s = await client.sync.v1.services.create({ friendlyName: 'doomed' });
  const svc = client.sync.v1.services(s.sid);
  const doc = await svc.documents.create({ uniqueName: 'd', data: { a: 1 } });
  const list = await svc.syncLists.create({ uniqueName: 'l' });
  await svc.syncLists(list.sid).syncListItems.create({ data: { i: 0 } });
  const map = await svc.syncMaps.create({ uniqueName: 'm' });
  await svc.syncMaps(map.sid).syncMapItems.create({ key: 'k', data: { k: 1 } });
  await svc.syncStreams.create({ uniqueName: 's' });
  assert.equal(await svc.remove(), true);
  await expectRestError(svc.documents(doc.sid).fetch(), 404, 20404, 'document of removed service');
  await expectRestError(svc.syncLists('l').syncListItems(0).fetch(), 404, 20404, 'list item of removed service');
  // A new service does not inherit anything.
  const s2 = await client.sync.v1.services.create({ friendlyName: 'fresh' });
  const svc2 = client.sync.v1.services(s2.sid);
  assert.deepEqual(await svc2.documents.list(), []);
  assert.deepEqual(await svc2.syncLists.list(), []);
  assert.deepEqual(await svc2.syncMaps.list(), []);
  assert.deepEqual(await svc2.syncStreams.list(), []);
  await svc2.remove();
});

test('services.list / each / page + nextPage / previousPage walk every service in creation order', async () => {
  const client = srv.restClient();
  const made = [];
  for (let i = 0; i < 5; i++) made.push(await client.sync.v1.services.create({ friendlyName: `page-${i}` }));
  try {
    const all = await client.sync.v1.services.list();
    const sids = all.map((s) => s.sid);
    assert.equal(sids[0], srv.creds.serviceSid, 'the bootstrap (default) service is the oldest and comes first');
    assert.deepEqual(sids.slice(-5), made.map((s) => s.sid), 'created services follow in creation order');
    assert.equal(new Set(sids).size, sids.length, 'no duplicates');
    for (const s of all) assertServiceShape(s, srv.baseUrl);

    const paged = await client.sync.v1.services.list({ pageSize: 2 });
    assert.deepEqual(paged.map((s) => s.sid), sids, 'list({pageSize: 2}) follows next_page_url to the end');

    const limited = await client.sync.v1.services.list({ limit: 3, pageSize: 2 });
    assert.deepEqual(limited.map((s) => s.sid), sids.slice(0, 3));

    const seen = [];
    await client.sync.v1.services.each({ pageSize: 4 }, (s) => seen.push(s.sid));
    assert.deepEqual(seen, sids, 'each({pageSize: 4}) visits every service once');

    // Manual paging.
    const p1 = await client.sync.v1.services.page({ pageSize: 2 });
    assert.deepEqual(p1.instances.map((s) => s.sid), sids.slice(0, 2));
    assert.equal(p1.previousPageUrl, undefined, 'first page has no previous_page_url');
    assert.ok(p1.nextPageUrl.startsWith(`${srv.baseUrl}/v1/Services?`), `absolute next_page_url: ${p1.nextPageUrl}`);
    const p2 = await p1.nextPage();
    assert.deepEqual(p2.instances.map((s) => s.sid), sids.slice(2, 4));
    let last = p2;
    let pages = 2;
    while (last.nextPageUrl) {
      last = await last.nextPage();
      pages++;
    }
    assert.equal(pages, Math.ceil(sids.length / 2));
    assert.equal(last.nextPage(), undefined, 'nextPage() on the last page is undefined');

    // previousPage(): twilio-node follows meta.previous_page_url.
    assert.ok(p2.previousPageUrl, `second page has a previous_page_url (meta ${JSON.stringify(p2._payload.meta)})`);
    assert.ok(p2.previousPageUrl.startsWith(`${srv.baseUrl}/v1/Services?`), `absolute previous_page_url: ${p2.previousPageUrl}`);
    const back = await p2.previousPage();
    assert.deepEqual(back.instances.map((s) => s.sid), sids.slice(0, 2), 'previousPage() returns the first page again');
  } finally {
    for (const s of made) await client.sync.v1.services(s.sid).remove();
  }
});

test("'default' addresses the account's default service in every service-scoped path", async () => {
  const client = srv.restClient();
  const def = await client.sync.v1.services('default').fetch();
  assert.equal(def.sid, srv.creds.serviceSid);
  assertServiceShape(def, srv.baseUrl);
  // Creating more services must not move the alias.
  const other = await client.sync.v1.services.create({ friendlyName: 'not default' });
  try {
    assert.equal((await client.sync.v1.services('default').fetch()).sid, srv.creds.serviceSid);
    const svc = client.sync.v1.services('default');
    const doc = await svc.documents.create({ uniqueName: 'via-default', data: { d: 1 } });
    assert.equal(doc.serviceSid, srv.creds.serviceSid, 'objects created via "default" belong to the default service');
    assert.equal(doc.url, `${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}/Documents/${doc.sid}`, 'url uses the real SID');
    assert.deepEqual(
      (await client.sync.v1.services(srv.creds.serviceSid).documents('via-default').fetch()).data,
      { d: 1 },
    );
    const map = await svc.syncMaps.create({ uniqueName: 'default-map' });
    assert.equal(map.serviceSid, srv.creds.serviceSid);
    const perm = await svc.syncMaps('default-map').syncMapPermissions('bob').update({ read: true, write: false, manage: false });
    assert.equal(perm.serviceSid, srv.creds.serviceSid);
    assert.equal(perm.mapSid, map.sid);
    const upd = await svc.update({ friendlyName: 'Default renamed' });
    assert.equal(upd.sid, srv.creds.serviceSid);
    assert.equal(upd.friendlyName, 'Default renamed');
    await svc.documents('via-default').remove();
    await svc.syncMaps('default-map').remove();
  } finally {
    await client.sync.v1.services(other.sid).remove();
  }
});

test('both credential styles: API key + secret (with accountSid) and account SID + auth token', async () => {
  const byKey = srv.restClient();
  const byToken = srv.restClientWithAuthToken();
  const a = await byKey.sync.v1.services(srv.creds.serviceSid).fetch();
  const b = await byToken.sync.v1.services(srv.creds.serviceSid).fetch();
  assert.deepEqual(b.toJSON(), a.toJSON());
  // A service created with one style is visible and writable with the other.
  const s = await byToken.sync.v1.services.create({ friendlyName: 'by token' });
  assert.equal(s.accountSid, srv.creds.accountSid);
  const doc = await byKey.sync.v1.services(s.sid).documents.create({ data: { k: 'key' } });
  const viaToken = await byToken.sync.v1.services(s.sid).documents(doc.sid).update({ data: { k: 'token' } });
  assert.deepEqual(viaToken.data, { k: 'token' });
  assert.deepEqual((await byToken.sync.v1.services.list()).map((x) => x.sid), (await byKey.sync.v1.services.list()).map((x) => x.sid));
  assert.equal(await byKey.sync.v1.services(s.sid).remove(), true);
});

test('service parameter validation: webhook URL 54051, debouncing window 1000-30000, friendly name length', async () => {
  const client = srv.restClient();
  await expectRestError(client.sync.v1.services.create({ webhookUrl: 'not a url' }), 400, 54051, 'webhookUrl "not a url"');
  await expectRestError(client.sync.v1.services.create({ webhookUrl: 'ftp://example.com/x' }), 400, 54051, 'webhookUrl ftp');
  await expectRestError(client.sync.v1.services.create({ reachabilityDebouncingWindow: 999 }), 400, 54060, 'window 999');
  await expectRestError(client.sync.v1.services.create({ reachabilityDebouncingWindow: 30001 }), 400, 54060, 'window 30001');
  await expectRestError(client.sync.v1.services.create({ friendlyName: 'x'.repeat(65) }), 400, 54053, 'friendlyName 65 chars');
  await expectRestError(
    client.sync.v1.services(srv.creds.serviceSid).update({ webhookUrl: 'nope' }), 400, 54051, 'update webhookUrl',
  );
  const lo = await client.sync.v1.services.create({ reachabilityDebouncingWindow: 1000 });
  assert.equal(lo.reachabilityDebouncingWindow, 1000);
  await lo.remove();
  // A SID-shaped but unknown service is 20404 (Twilio REST's not-found); a malformed one too.
  await expectRestError(client.sync.v1.services('IS' + '0'.repeat(32)).fetch(), 404, 20404, 'unknown IS sid');
  await expectRestError(client.sync.v1.services('nonsense').fetch(), 404, 20404, 'malformed service sid');
});
