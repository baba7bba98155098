'use strict';
// Wire-level checks with a raw Twilsock client (sdk/raw.js) for behaviour the SDK API cannot force:
// framing, unknown/telemetry frames, subscription protocol ordering and correlation ids, 412 vs 404
// on map item PUTs, write responses vs event ids (spec §1, §4, §6, §7; checklist 2–3, 23–24,
// 28–30, 34, 39, 41, 50).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, sleep } = require('../lib/harness');
const { uniq, until } = require('./util');
const { RawClient } = require('./raw');

const srv = useServer({ name: 'raw' });
const clients = [];

async function raw(identity = uniq('raw')) {
  const c = new RawClient(srv.wsUrl);
  clients.push(c);
  const reply = await c.open(srv.mintToken(identity));
  assert.equal(reply.header.status.code, 200, `init accepted: ${JSON.stringify(reply.header.status)}`);
  return c;
}

const events = (f) => (f.payload.events || (f.payload.event ? [f.payload.event] : []));

test.after(() => {
  for (const c of clients) c.close();
});

test('init reply: binary, same id, 200; telemetry.v1 and unknown methods neither close nor error', async () => {
  const c = await raw();
  c.send({ method: 'telemetry.v1', events: [{ start: -1, end: 0, title: 't', details: '' }] });
  c.send({ method: 'put_notification_ctx_unknown_xyz' });
  c.send({ method: 'no_such_method' }, { x: 1 });
  await sleep(500);
  const res = await c.http('GET', '/v3/Documents/' + uniq('none'));
  assert.equal(res.reply.header.status.code, 200, 'twilsock status 200 even for an HTTP error');
  assert.equal(res.status, 404);
  assert.ok([54100, 54300].includes(res.body.code));
  assert.equal(c.closed, false);
  assert.ok(!c.frames.some((f) => f.header.method === 'close'), 'no close frame');
  const errorReplies = c.frames.filter((f) => f.header.method === 'reply' && f.header.status && f.header.status.code >= 300);
  assert.deepEqual(errorReplies.map((f) => f.header.status), [], 'no error replies to telemetry/unknown frames');
  assert.deepEqual(c.bad, []);
});

test('subscriptions: reply (estimated_delivery_in_ms > 0) precedes replay and subscription_established with the same correlation_id; cancel → subscription_canceled', async () => {
  const c = await raw();
  const created = await c.http('POST', '/v3/Documents', { body: { unique_name: uniq('sub'), data: { n: 0 } } });
  assert.equal(created.status, 201);
  const doc = created.body;
  assert.match(doc.sid, /^ET[0-9a-f]{32}$/);
  const w1 = await c.http('POST', doc.url, { body: { data: { n: 1 } } });
  const w2 = await c.http('POST', doc.url, { body: { data: { n: 2 } } });
  assert.equal(w1.status, 200);
  assert.ok(w2.body.last_event_id > w1.body.last_event_id);

  const corr = Date.now();
  const before = c.frames.length;
  const sub = await c.http('POST', '/v4/Subscriptions', {
    body: { event_protocol_version: 4, action: 'establish', correlation_id: corr, retried_requests: 0, ttl_in_s: -1,
      requests: [{ object_sid: doc.sid, object_type: 'document', last_event_id: w1.body.last_event_id }] },
  });
  assert.equal(sub.status, 200);
  assert.ok(sub.body.estimated_delivery_in_ms > 0, 'estimated_delivery_in_ms > 0');
  await until(() => c.frames.some((f) => f.header.method === 'notification' && f.payload.event_type === 'subscription_established'), 5000, 'subscription_established');
  const after = c.frames.slice(before);
  const replyIdx = after.indexOf(sub.reply);
  const replayIdx = after.findIndex((f) => f.header.method === 'notification' && f.payload.event_type === 'document_updated');
  const estIdx = after.findIndex((f) => f.header.method === 'notification' && f.payload.event_type === 'subscription_established');
  assert.ok(replyIdx >= 0 && replayIdx > replyIdx && estIdx > replayIdx,
    `order: reply (${replyIdx}) < replayed event (${replayIdx}) < subscription_established (${estIdx})`);
  const replay = after[replayIdx];
  assert.equal(replay.payload.correlation_id, corr, 'replayed event carries the numeric correlation_id');
  assert.deepEqual(events(replay).map((e) => [e.id, e.document_data]), [[w2.body.last_event_id, { n: 2 }]], 'exactly the missed event');
  const est = after[estIdx];
  assert.equal(est.payload.correlation_id, corr);
  assert.equal(est.header.message_type, 'twilio.sync.event');
  const e = events(est).find((x) => x.object_sid === doc.sid);
  assert.equal(e.replay_status, 'completed');
  assert.equal(e.last_event_id, w2.body.last_event_id);

  // a write on the subscribed object: write response last_event_id == the event id, revision matches
  const w3 = await c.http('POST', doc.url, { body: { data: { n: 3 } } });
  await until(() => c.frames.some((f) => f.header.method === 'notification' && f.payload.event_type === 'document_updated'
    && events(f).some((x) => x.id === w3.body.last_event_id)), 5000, 'live event for w3');
  const live = c.frames.find((f) => f.header.method === 'notification' && events(f).some((x) => x.id === w3.body.last_event_id));
  const le = events(live)[0];
  assert.equal(le.document_revision, w3.body.revision);
  assert.deepEqual(le.document_data, { n: 3 });
  assert.equal(le.document_sid, doc.sid);

  // no re-poke needed: nothing else expected; cancel
  const corr2 = corr + 1;
  const cancel = await c.http('POST', '/v4/Subscriptions', {
    body: { event_protocol_version: 4, action: 'cancel', correlation_id: corr2, retried_requests: 0, ttl_in_s: -1,
      requests: [{ object_sid: doc.sid, object_type: 'document' }] },
  });
  assert.equal(cancel.status, 200);
  await until(() => c.frames.some((f) => f.header.method === 'notification' && f.payload.event_type === 'subscription_canceled'
    && f.payload.correlation_id === corr2), 5000, 'subscription_canceled');
  const t = Date.now();
  await c.http('POST', doc.url, { body: { data: { n: 4 } } });
  await sleep(400);
  assert.ok(!c.frames.some((f) => f.t > t && f.header.method === 'notification' && f.payload.event_type === 'document_updated'),
    'no events after cancel');
});

test('subscription_failed 404 (with the correlation_id) for a missing object', async () => {
  const c = await raw();
  const corr = Date.now();
  const missing = 'ET' + '0'.repeat(31) + '1';
  const sub = await c.http('POST', '/v4/Subscriptions', {
    body: { event_protocol_version: 4, action: 'establish', correlation_id: corr, retried_requests: 0, ttl_in_s: -1,
      requests: [{ object_sid: missing, object_type: 'document', last_event_id: 0 }] },
  });
  assert.equal(sub.status, 200);
  await until(() => c.frames.some((f) => f.header.method === 'notification' && f.payload.event_type === 'subscription_failed'), 5000, 'subscription_failed');
  const f = c.frames.find((x) => x.header.method === 'notification' && x.payload.event_type === 'subscription_failed');
  assert.equal(f.payload.correlation_id, corr);
  const e = events(f)[0];
  assert.equal(e.object_sid, missing);
  assert.equal(e.error.status, 404);
  assert.equal(typeof e.error.message, 'string');
});

test('If-Match: document 412/54103 on a stale revision; map item PUT −1 on existing → 412; stale revision on a deleted item → 412 (never 404)', async () => {
  const c = await raw();
  const doc = (await c.http('POST', '/v3/Documents', { body: { data: { a: 1 } } })).body;
  const good = await c.http('POST', doc.url, { body: { data: { a: 2 } }, headers: { 'If-Match': doc.revision } });
  assert.equal(good.status, 200);
  assert.notEqual(good.body.revision, doc.revision);
  const stale = await c.http('POST', doc.url, { body: { data: { a: 3 } }, headers: { 'If-Match': doc.revision } });
  assert.equal(stale.status, 412, `stale revision → 412 (got ${stale.status} ${JSON.stringify(stale.body)})`);
  assert.equal(stale.body.code, 54103);

  const map = (await c.http('POST', '/v3/Maps', { body: { unique_name: uniq('m') } })).body;
  const itemUrl = map.links.items + '/' + encodeURIComponent('k');
  const created = await c.http('PUT', itemUrl, { body: { data: { v: 1 } }, headers: { 'If-Match': '-1' } });
  assert.equal(created.status, 201);
  assert.equal(created.body.key, 'k');
  const exists = await c.http('PUT', itemUrl, { body: { data: { v: 2 } }, headers: { 'If-Match': '-1' } });
  assert.equal(exists.status, 412);
  assert.ok([54205, 54208].includes(exists.body.code), `code ${exists.body.code}`);
  const del = await c.http('DELETE', created.body.url, { body: 'data_sync' });
  assert.equal(del.status, 200);
  assert.equal(typeof del.body.last_event_id, 'number');
  assert.ok(del.body.date_updated);
  const ghost = await c.http('PUT', itemUrl, { body: { data: { v: 3 } }, headers: { 'If-Match': created.body.revision } });
  assert.equal(ghost.status, 412, `stale revision on a deleted item → 412 (got ${ghost.status} ${JSON.stringify(ghost.body)})`);
  const single = await c.http('GET', map.links.items, { params: { HideExpired: 'true', Key: 'k' } });
  assert.equal(single.status, 200);
  assert.deepEqual(single.body.items, []);
  assert.ok(single.body.meta, 'meta present');

  const list = (await c.http('POST', '/v3/Lists', { body: {} })).body;
  const none = await c.http('GET', list.links.items, { params: { HideExpired: 'true', Index: '42' } });
  assert.equal(none.status, 200);
  assert.deepEqual(none.body.items, []);
  assert.ok(none.body.meta);

  await c.http('DELETE', map.url, { body: 'data_sync' });
  const gone = await c.http('PUT', itemUrl, { body: { data: { v: 4 } } });
  assert.equal(gone.status, 404);
  assert.equal(gone.body.code, 54200);
});
