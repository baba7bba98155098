'use strict';
// Credentials through the official `twilio` Node helper library: API v2010 Keys
// (client.api.v2010.accounts(AC).keys, client.newKeys), auth token rotation (client.accounts.v1
// secondaryAuthToken / authTokenPromotion), who may manage them, and revocation taking effect at
// once for REST and for the SDK's init / updateToken.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitForState, twilio } = require('../lib/harness');
const { sidRe, expectRestError } = require('./util');

const srv = useServer({ name: 'rest-keys' });

// The helper pointed at Chorus for the v2010, accounts and sync domains.
function client(user, pass) {
  const c = twilio(user, pass, { accountSid: srv.creds.accountSid, autoRetry: false });
  c.api.baseUrl = srv.baseUrl;
  c.accounts.baseUrl = srv.baseUrl;
  c.sync.baseUrl = srv.baseUrl;
  return c;
}

let promotedToken = null; // set by the rotation test

const rfc2822 = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$/;

async function restWorks(user, pass) {
  const res = await fetch(`${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}`, {
    headers: { Authorization: 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64') },
  });
  return res.status;
}

test('keys: create (secret once), list, fetch, update, delete with the twilio helper', async () => {
  const acct = client(srv.creds.accountSid, srv.creds.authToken);
  const keys = acct.api.v2010.accounts(srv.creds.accountSid).keys;
  const before = Date.now() - 2000;

  const k = await acct.newKeys.create({ friendlyName: 'backend' });
  assert.match(k.sid, sidRe('SK'));
  assert.equal(k.friendlyName, 'backend');
  assert.ok(typeof k.secret === 'string' && k.secret.length >= 32);
  assert.ok(k.dateCreated instanceof Date && k.dateCreated.getTime() >= before);
  // The raw JSON is exactly Twilio's shape, with RFC 2822 dates.
  const raw = await fetch(`${srv.baseUrl}/2010-04-01/Accounts/${srv.creds.accountSid}/Keys/${k.sid}.json`, {
    headers: { Authorization: 'Basic ' + Buffer.from(`${srv.creds.accountSid}:${srv.creds.authToken}`).toString('base64') },
  }).then((r) => r.json());
  assert.deepEqual(Object.keys(raw).sort(), ['date_created', 'date_updated', 'friendly_name', 'sid']);
  assert.match(raw.date_created, rfc2822);

  const k2 = await acct.api.v2010.accounts(srv.creds.accountSid).newKeys.create({ friendlyName: 'worker' });
  const listed = await keys.list({ pageSize: 1 }); // pages through next_page_uri
  assert.deepEqual(listed.map((x) => x.sid), [srv.creds.apiKey, k.sid, k2.sid]);
  assert.ok(listed.every((x) => x.secret === undefined), 'no secret in lists');

  assert.equal((await keys(k.sid).fetch()).friendlyName, 'backend');
  const up = await keys(k.sid).update({ friendlyName: 'backend v2' });
  assert.equal(up.friendlyName, 'backend v2');
  assert.ok(up.dateUpdated.getTime() >= up.dateCreated.getTime());

  // The new key is a standard key: REST and tokens yes, managing keys no (403, 20003).
  assert.equal(await restWorks(k.sid, k.secret), 200);
  const std = client(k.sid, k.secret);
  await expectRestError(std.api.v2010.accounts(srv.creds.accountSid).keys.list(), 403, 20003, 'standard key lists keys');
  await expectRestError(std.newKeys.create(), 403, 20003, 'standard key creates a key');
  await expectRestError(std.accounts.v1.secondaryAuthToken().create(), 403, 20003, 'standard key rotates the auth token');
  // The operator's main key may.
  const main = client(srv.creds.apiKey, srv.creds.apiSecret);
  assert.equal((await main.api.v2010.accounts(srv.creds.accountSid).keys(k2.sid).fetch()).sid, k2.sid);

  // A token signed by the key works with the SDK until the key is deleted.
  const token = srv.mintToken('keyed', { apiKey: k.sid, apiSecret: k.secret });
  const live = srv.newClient('keyed', { token });
  await waitForState(live, 'connected', 15000);

  assert.equal(await keys(k.sid).remove(), true);
  // The live session the key signed is closed by the server (twilsock close 401/20103); the SDK
  // stops there ('disconnected') instead of retrying a token that can no longer work.
  await waitForState(live, 'disconnected', 15000);
  assert.equal(await restWorks(k.sid, k.secret), 401, 'REST with the deleted key on the next request');
  await expectRestError(keys(k.sid).fetch(), 404, 20404, 'fetch deleted key');
  await expectRestError(keys(k.sid).remove(), 404, 20404, 'delete twice');
  // init with a token of the deleted key is refused...
  const late = srv.newClient('keyed', { token: srv.mintToken('keyed', { apiKey: k.sid, apiSecret: k.secret }) });
  await waitForState(late, 'denied', 15000);
  // ...and so is updateToken, on a client connected with a valid token.
  const other = srv.newClient('keyed');
  await waitForState(other, 'connected', 15000);
  await assert.rejects(other.updateToken(srv.mintToken('keyed', { apiKey: k.sid, apiSecret: k.secret, ttl: 1800 })));

  await keys(k2.sid).remove();
});

test('auth token rotation: secondary, both valid, promote, the old one refused', async () => {
  const acct = client(srv.creds.accountSid, srv.creds.authToken);
  const sec = await acct.accounts.v1.secondaryAuthToken().create();
  assert.equal(sec.accountSid, srv.creds.accountSid);
  assert.ok(sec.secondaryAuthToken.length >= 32);
  assert.equal(await restWorks(srv.creds.accountSid, srv.creds.authToken), 200);
  assert.equal(await restWorks(srv.creds.accountSid, sec.secondaryAuthToken), 200);

  // Drop it and make another; then promote.
  assert.equal(await acct.accounts.v1.secondaryAuthToken().remove(), true);
  assert.equal(await restWorks(srv.creds.accountSid, sec.secondaryAuthToken), 401);
  const sec2 = await acct.accounts.v1.secondaryAuthToken().create();
  const promoted = await acct.accounts.v1.authTokenPromotion().update();
  assert.equal(promoted.authToken, sec2.secondaryAuthToken);
  promotedToken = promoted.authToken;
  assert.equal(await restWorks(srv.creds.accountSid, srv.creds.authToken), 401, 'the old primary is refused');
  const now = client(srv.creds.accountSid, sec2.secondaryAuthToken);
  await expectRestError(now.accounts.v1.authTokenPromotion().update(), 404, 20404, 'promote without a secondary');
  const svc = await now.sync.v1.services(srv.creds.serviceSid).fetch();
  assert.equal(svc.sid, srv.creds.serviceSid);
});

test('a restart with the TWILIO_* of before the rotation keeps the promoted token; the updated ones take over', async () => {
  // The promoted token from the previous test is not in the environment. A node restarted with the
  // old TWILIO_AUTH_TOKEN (its supervisor, before the environment was updated) must not bring the
  // retired, perhaps leaked, token back, nor lock out the promoted one: it serves with the stored
  // credentials and says so.
  assert.ok(promotedToken, 'the rotation test ran');
  const retired = srv.creds.authToken;
  await srv.restart();
  assert.equal(await restWorks(srv.creds.accountSid, promotedToken), 200, 'the promoted token still works');
  assert.equal(await restWorks(srv.creds.accountSid, retired), 401, 'the retired token stays refused');
  assert.equal(await restWorks(srv.creds.apiKey, srv.creds.apiSecret), 200);
  assert.match(srv.logs(), /were replaced since/);
  assert.doesNotMatch(srv.logs(), new RegExp(retired));
  // The environment updated: applied as usual.
  srv.creds.authToken = promotedToken;
  await srv.restart();
  assert.equal(await restWorks(srv.creds.accountSid, promotedToken), 200);
  assert.equal(await restWorks(srv.creds.accountSid, retired), 401);
});
