'use strict';
// Webhooks (issue 11): delivered to a real receiver and verified with the official
// `twilio.validateRequest`; SSRF targets refused with 54051; a webhook pointed at Chorus
// itself refused (508) and reported by /admin/v1/Webhooks and /metrics.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { useServer, startServer, twilio, eventually, sleep } = require('../lib/harness');

const srv = useServer({ name: 'rest-webhooks' });
let receiver;
const hits = [];

before(async () => {
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const params = Object.fromEntries(new URLSearchParams(body));
      hits.push({ params, signature: req.headers['x-twilio-signature'], path: req.url, authorization: req.headers.authorization });
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
});
after(() => new Promise((resolve) => receiver.close(resolve)));

async function expect54051(promise, what) {
  const err = await promise.then(() => assert.fail(`${what}: accepted`), (e) => e);
  assert.ok(err instanceof twilio.RestException, `${what}: ${err && err.stack}`);
  assert.equal(err.status, 400, what);
  assert.equal(err.code, 54051, what);
  assert.ok(!/s3cr3t/.test(err.message), `${what}: the message repeats the password`);
}

test('webhooks arrive signed: twilio.validateRequest accepts them', async () => {
  const client = srv.restClient();
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook?tenant=acme`;
  await client.sync.v1.services(srv.creds.serviceSid).update({ webhookUrl: hookUrl, webhooksFromRestEnabled: true });
  await sleep(1100); // service settings are cached for a second
  const doc = await client.sync.v1.services(srv.creds.serviceSid).documents.create({ uniqueName: 'board', data: { turn: 'X' } });
  await client.sync.v1.services(srv.creds.serviceSid).documents(doc.sid).update({ data: { turn: 'O' } });
  await eventually(() => hits.length >= 2, 10000);
  assert.deepEqual(hits.map((h) => h.params.EventType), ['document_created', 'document_updated']);
  for (const h of hits) {
    assert.equal(h.path, '/hook?tenant=acme');
    assert.ok(twilio.validateRequest(srv.creds.authToken, h.signature, hookUrl, h.params), `signature of ${h.params.EventType}`);
    assert.ok(!twilio.validateRequest('0'.repeat(32), h.signature, hookUrl, h.params), 'another auth token must not validate');
    assert.equal(h.params.DocumentSid, doc.sid);
    assert.equal(h.params.ServiceSid, srv.creds.serviceSid);
  }
  assert.equal(hits[1].params.DocumentData, '{"turn":"O"}');
  assert.equal(hits[1].params.EventId, '1');
});

// Twilio allows user:password@ in a webhook URL and authenticates with it; it signs the URL
// as set, so a validator is given that URL. Every generation of the helper library accepts the
// signature (twilio-node 3.x–6.x, each npm alias).
test('a webhook URL with user:password@ is called with Basic auth and validates in every twilio-node', async () => {
  const client = srv.restClient();
  const svc = await client.sync.v1.services.create({ friendlyName: 'basic-auth', webhooksFromRestEnabled: true });
  const hookUrl = `http://hook-user:p%40ss@127.0.0.1:${receiver.address().port}/basic?tenant=acme`;
  await client.sync.v1.services(svc.sid).update({ webhookUrl: hookUrl });
  assert.equal((await client.sync.v1.services(svc.sid).fetch()).webhookUrl, hookUrl, 'the URL is kept as set');
  await sleep(1100); // service settings are cached for a second
  const doc = await client.sync.v1.services(svc.sid).documents.create({ data: { a: 1 } });
  let h;
  await eventually(() => (h = hits.find((x) => x.params.DocumentSid === doc.sid)), 10000);
  assert.equal(h.path, '/basic?tenant=acme');
  assert.equal(h.authorization, 'Basic ' + Buffer.from('hook-user:p@ss').toString('base64'));
  for (const name of ['twilio-3-28', 'twilio-3-84', 'twilio-4', 'twilio-5', 'twilio']) {
    const lib = require(name);
    assert.ok(lib.validateRequest(srv.creds.authToken, h.signature, hookUrl, h.params), `${name} validates the signature`);
    assert.ok(!lib.validateRequest(srv.creds.authToken, h.signature, hookUrl.replace('p%40ss', 'other'), h.params),
      `${name}: the credentials are part of what is signed`);
  }
});

test('SSRF targets are refused with 54051 and nothing changes', async () => {
  const strict = await startServer({ name: 'rest-webhooks-strict', env: { CHORUS_WEBHOOKS_ALLOW_PRIVATE: '0' } });
  try {
    const client = strict.restClient();
    const svc = client.sync.v1.services(strict.creds.serviceSid);
    await svc.update({ webhookUrl: 'https://hooks.example.com/sync' });
    for (const bad of [
      `http://127.0.0.1:${receiver.address().port}/hook`,
      'http://169.254.169.254/latest/meta-data/',
      'http://[::1]:5432/',
      'http://0x7f000001/',
      'http://2130706433/',
      'http://10.0.0.1/',
      'http://172.16.0.1/',
      'http://192.168.0.1/',
      'http://localhost:3000/',
      'http://[fe80::1]/',
      'http://0.0.0.0/',
      'http://224.0.0.1/',
      'http://user:s3cr3t@10.0.0.1/',
    ]) {
      await expect54051(svc.update({ webhookUrl: bad }), `update to ${bad}`);
      await expect54051(client.sync.v1.services.create({ webhookUrl: bad }), `create with ${bad}`);
    }
    assert.equal((await svc.fetch()).webhookUrl, 'https://hooks.example.com/sync', 'the service is unchanged');
  } finally {
    await strict.stop();
  }
});

test('a webhook pointed at Chorus is refused (508) and reported', async () => {
  const client = srv.restClient();
  const svc = await client.sync.v1.services.create({ friendlyName: 'loop', webhooksFromRestEnabled: true });
  await client.sync.v1.services(svc.sid).update({ webhookUrl: `${srv.baseUrl}/v1/Services/${svc.sid}/Documents` });
  await sleep(1100);
  await client.sync.v1.services(svc.sid).documents.create({ data: { a: 1 } });
  const auth = 'Basic ' + Buffer.from(`${srv.creds.accountSid}:${srv.creds.authToken}`).toString('base64');
  let report;
  await eventually(async () => {
    const res = await fetch(`${srv.baseUrl}/admin/v1/Webhooks`, { headers: { Authorization: auth } });
    assert.equal(res.status, 200);
    report = (await res.json()).services.find((s) => s.service_sid === svc.sid);
    // The failure is recorded a moment before the abandoned row leaves the outbox.
    return report && report.recent_failures.length > 0 && report.pending === 0;
  }, 10000);
  assert.equal(report.recent_failures[0].status, 508);
  assert.equal(report.recent_failures[0].outcome, 'abandoned');
  assert.equal(report.abandoned, 1);
  assert.equal(report.pending, 0);
  assert.equal(report.abandoned_kept, 1, 'the webhook given up on is kept to be replayed');
  // Nothing was created by the webhook's POST.
  assert.equal((await client.sync.v1.services(svc.sid).documents.list()).length, 1);
  const metrics = await (await fetch(`${srv.baseUrl}/metrics`)).text();
  assert.match(metrics, /^chorus_webhooks_abandoned_total [1-9]/m);
  assert.match(metrics, new RegExp(`^chorus_webhooks_abandoned_kept\\{service="${svc.sid}"\\} 1$`, 'm'));
  assert.match(metrics, /^chorus_webhooks_sent_total [1-9]/m);
  await client.sync.v1.services(svc.sid).remove();
});
