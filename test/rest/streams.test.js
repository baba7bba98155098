'use strict';
// REST v1 Streams (operations 43-47) and Stream Messages (48) through the official `twilio` Node
// helper library.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, twilio, waitFor } = require('../lib/harness');
const { sidRe, uniq, expectRestError, assertExpires } = require('./util');

const srv = useServer({ name: 'rest-streams' });

// Streams live in the default service here (the SDK subscriber test needs the token's service).
const svc = () => srv.restClient().sync.v1.services(srv.creds.serviceSid);

function assertStream(s, uniqueName) {
  assert.match(s.sid, sidRe('TO'));
  assert.equal(s.uniqueName, uniqueName);
  assert.equal(s.accountSid, srv.creds.accountSid);
  assert.equal(s.serviceSid, srv.creds.serviceSid);
  const url = `${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}/Streams/${s.sid}`;
  assert.equal(s.url, url);
  assert.deepEqual(s.links, { messages: `${url}/Messages` });
  assert.equal(s.createdBy, 'system');
  assert.ok(s.dateCreated instanceof Date && s.dateUpdated instanceof Date);
  assert.equal(s.revision, undefined, 'streams have no revision');
  assert.equal(s.data, undefined, 'streams have no data');
}

test('syncStreams.create / fetch (SID, unique name) / update ttl / list / each / page / remove', async () => {
  const name = uniq('stream é');
  const s = await svc().syncStreams.create({ uniqueName: name });
  assertStream(s, name);
  assert.equal(s.dateExpires, null);
  assert.deepEqual((await svc().syncStreams(s.sid).fetch()).toJSON(), s.toJSON());
  assert.deepEqual((await svc().syncStreams(name).fetch()).toJSON(), s.toJSON());

  let t0 = Date.now();
  const u = await svc().syncStreams(name).update({ ttl: 3600 });
  assertExpires(u.dateExpires, 3600, t0, Date.now(), 'update ttl');
  assertStream(u, name);
  assert.equal((await svc().syncStreams(s.sid).update({ ttl: 0 })).dateExpires, null, 'ttl 0 clears');

  t0 = Date.now();
  const anon = await svc().syncStreams.create({ ttl: 60 });
  assertExpires(anon.dateExpires, 60, t0, Date.now(), 'create ttl');
  assertStream(anon, null);
  const third = await svc().syncStreams.create({ uniqueName: uniq('third') });

  const want = [s.sid, anon.sid, third.sid];
  assert.deepEqual((await svc().syncStreams.list()).map((x) => x.sid), want);
  assert.deepEqual((await svc().syncStreams.list({ pageSize: 2 })).map((x) => x.sid), want);
  assert.deepEqual((await svc().syncStreams.list({ pageSize: 2, limit: 2 })).map((x) => x.sid), want.slice(0, 2));
  const seen = [];
  await svc().syncStreams.each({ pageSize: 1 }, (x) => seen.push(x.sid));
  assert.deepEqual(seen, want);
  const p1 = await svc().syncStreams.page({ pageSize: 2 });
  assert.deepEqual(p1.instances.map((x) => x.sid), want.slice(0, 2));
  assert.equal(p1._payload.meta.key, 'streams');
  assert.ok(p1.nextPageUrl.startsWith(`${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}/Streams?`), p1.nextPageUrl);
  const p2 = await p1.nextPage();
  assert.deepEqual(p2.instances.map((x) => x.sid), want.slice(2));
  assert.equal(p2.nextPageUrl, undefined);

  for (const x of [s, anon, third]) assert.equal(await svc().syncStreams(x.sid).remove(), true);
  await expectRestError(svc().syncStreams(s.sid).fetch(), 404, 20404, 'removed stream by SID');
  await expectRestError(svc().syncStreams(name).fetch(), 404, 20404, 'removed stream by name');
  await expectRestError(svc().syncStreams(s.sid).remove(), 404, 20404, 'remove twice');
  await expectRestError(svc().syncStreams(s.sid).update({ ttl: 5 }), 404, 20404, 'update removed');
  assert.deepEqual(await svc().syncStreams.list(), []);
});

test('streamMessages.create returns {sid: TZ…, data}; by SID and by unique name; 4 KiB limit', async () => {
  const name = uniq('pub');
  const s = await svc().syncStreams.create({ uniqueName: name });
  const m = await svc().syncStreams(s.sid).streamMessages.create({ data: { hello: 'world', n: [1, 2, 3] } });
  assert.match(m.sid, sidRe('TZ'));
  assert.deepEqual(m.data, { hello: 'world', n: [1, 2, 3] });
  assert.deepEqual(Object.keys(m.toJSON()).sort(), ['data', 'sid'], 'a stream message has only sid and data');
  const m2 = await svc().syncStreams(name).streamMessages.create({ data: { second: true } });
  assert.match(m2.sid, sidRe('TZ'));
  assert.notEqual(m2.sid, m.sid, 'every message gets its own SID');
  const viaHttp = await svc().syncStreams(name).streamMessages.createWithHttpInfo({ data: { x: 1 } });
  assert.equal(viaHttp.statusCode, 201);

  // 4 KiB of serialized data is the limit: {"s":"…"} is 8 bytes + the string.
  const fits = await svc().syncStreams(s.sid).streamMessages.create({ data: { s: 'x'.repeat(4096 - 8) } });
  assert.equal(fits.data.s.length, 4088);
  await expectRestError(
    svc().syncStreams(s.sid).streamMessages.create({ data: { s: 'x'.repeat(4096 - 7) } }), 413, 54006, '4097-byte message',
  );
  await expectRestError(svc().syncStreams(s.sid).streamMessages.create({ data: '{not json' }), 400, 54008, 'invalid JSON');
  await expectRestError(
    svc().syncStreams('TO' + '0'.repeat(32)).streamMessages.create({ data: {} }), 404, 20404, 'message to unknown stream',
  );
  await expectRestError(svc().syncStreams('no such stream').streamMessages.create({ data: {} }), 404, 20404, 'unknown name');
  await s.remove();
});

test('a message published through REST reaches an SDK subscriber of the stream', async () => {
  const name = uniq('live');
  const s = await svc().syncStreams.create({ uniqueName: name });
  const client = srv.newClient('listener');
  const stream = await client.stream({ id: name, mode: 'open_existing' });
  assert.equal(stream.sid, s.sid);
  // Streams have no replay: a message reaches only subscriptions already established. Publish
  // probes until one arrives (the subscription is then live), then the message under test.
  const probed = waitFor(stream, 'messagePublished', (e) => e.message.data.probe === true, 10000);
  let arrived = false;
  probed.then(() => { arrived = true; }, () => {});
  for (let i = 0; !arrived && i < 40; i++) {
    await svc().syncStreams(s.sid).streamMessages.create({ data: { probe: true, i } });
    await new Promise((r) => setTimeout(r, 250));
  }
  await probed;
  const got = waitFor(stream, 'messagePublished', (e) => e.message.data.via === 'rest', 10000);
  const m = await svc().syncStreams(s.sid).streamMessages.create({ data: { via: 'rest', n: 1 } });
  const ev = await got;
  assert.equal(ev.message.sid, m.sid, 'the subscriber sees the SID REST returned');
  assert.deepEqual(ev.message.data, { via: 'rest', n: 1 });
  assert.equal(ev.isLocal, false);
  await srv.closeClients();
  await s.remove();
});
