'use strict';
// Key revocation as the official SDK sees it: a client connected with a token signed by a standard key
// created through the Keys API (the `twilio` helper's client.newKeys.create() pointed at Chorus) is
// closed promptly when that key is deleted, stops receiving data, and cannot connect again with the
// same token; a client whose token another key signed keeps working.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor, waitForState, sleep, twilio } = require('../lib/harness');
const { uniq, tap, connect, record, until } = require('./util');

tap.install();
const srv = useServer({ name: 'sdk-revoke' });

const REVOKE_MS = 10000; // the bound: it takes milliseconds; generous for a loaded machine

function helper() {
  const c = twilio(srv.creds.accountSid, srv.creds.authToken, { accountSid: srv.creds.accountSid, autoRetry: false });
  c.api.baseUrl = srv.baseUrl;
  c.sync.baseUrl = srv.baseUrl;
  return c;
}

test('deleting a key closes the SDK sessions it signed and refuses their token; other keys keep working', async () => {
  const acct = helper();
  const doomed = await acct.newKeys.create({ friendlyName: 'revoked backend' });
  const kept = await acct.newKeys.create({ friendlyName: 'kept backend' });
  const sign = (k, who) => srv.mintToken(who, { apiKey: k.sid, apiSecret: k.secret });

  const victim = uniq('victim');
  const victimToken = sign(doomed, victim);
  const cv = await connect(srv, victim, { token: victimToken });
  const keeper = uniq('kept');
  const ck = await connect(srv, keeper, { token: sign(kept, keeper) });

  const name = uniq('revoke-doc');
  const dv = await cv.document(name);
  await dv.set({ n: 0 });
  const dk = await ck.document(name);
  const keptSees = waitFor(dk, 'updated', (e) => e.data.n === 1, REVOKE_MS);
  const victimSees = waitFor(dv, 'updated', (e) => e.data.n === 1, REVOKE_MS);
  await acct.sync.v1.services(srv.creds.serviceSid).documents(name).update({ data: { n: 1 } });
  await Promise.all([keptSees, victimSees]);

  const states = record(cv, 'connectionStateChanged');
  const expired = record(cv, 'tokenExpired');
  const t0 = Date.now();
  const gone = waitFor(cv, 'connectionStateChanged', (s) => ['disconnected', 'denied', 'error'].includes(s), REVOKE_MS);
  assert.equal(await acct.api.v2010.accounts(srv.creds.accountSid).keys(doomed.sid).remove(), true);
  await gone;
  const took = Date.now() - t0;
  assert.ok(took < REVOKE_MS, `closed after ${took} ms`);

  // The server ended the session with the close of an expired token: the SDK stops and tells the app,
  // whose renewal (as at expiry) is how it goes on.
  const closes = tap.socketsFor(victimToken).flatMap((s) => s.in.filter((f) => f.header.method === 'close'));
  assert.equal(closes.length, 1, 'one twilsock close');
  assert.equal(closes[0].header.status.code, 410);
  assert.equal(closes[0].header.status.errorCode ?? closes[0].header.status.error_code, 20103);
  await until(() => expired.events.length > 0, REVOKE_MS, 'tokenExpired on the revoked client');
  expired.stop();

  // Nothing reaches the revoked client any more, and it never gets connected again with its token.
  const after = record(dv, 'updated');
  const keptAgain = waitFor(dk, 'updated', (e) => e.data.n === 2, REVOKE_MS);
  await acct.sync.v1.services(srv.creds.serviceSid).documents(name).update({ data: { n: 2 } });
  await keptAgain;
  await sleep(1500);
  after.stop();
  states.stop();
  assert.deepEqual(after.events, [], 'updates after the revocation');
  assert.ok(!states.events.includes('connected'), `states after the revocation: ${states.events}`);
  assert.notEqual(cv.connectionState, 'connected');

  // A new client with the same token is denied.
  const again = srv.newClient(victim, { token: victimToken });
  await waitForState(again, 'denied', 15000);
  const socks = tap.socketsFor(victimToken);
  assert.equal(socks.length, 2, 'the revoked client opened no other socket');
  const initReply = socks[1].in.find((f) => f.header.method === 'reply');
  assert.equal(initReply && initReply.header.status.code, 401, 'init with the token of the deleted key');

  // The client of the other key still reads and writes.
  await dk.set({ n: 3 });
  assert.equal(ck.connectionState, 'connected');
  const doc = await acct.sync.v1.services(srv.creds.serviceSid).documents(name).fetch();
  assert.deepEqual(doc.data, { n: 3 });

  // The app's renewal, with a token the kept key signed, brings the revoked client back, with what it missed.
  const back = waitFor(dv, 'updated', (e) => e.data.n === 4, REVOKE_MS);
  await cv.updateToken(sign(kept, victim));
  await waitForState(cv, 'connected', REVOKE_MS);
  await acct.sync.v1.services(srv.creds.serviceSid).documents(name).update({ data: { n: 4 } });
  await back;

  await acct.api.v2010.accounts(srv.creds.accountSid).keys(kept.sid).remove();
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
