'use strict';
// SyncClient: connection states, refused tokens, updateToken, tokenAboutToExpire, tokenExpired,
// shutdown (spec §2–3, checklist 1–12, 51).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { useServer, signJwt, waitFor, waitForState, sleep } = require('../lib/harness');
const { uniq, tap, connect, expectReject, record, until } = require('./util');

tap.install();
const srv = useServer({ name: 'client' });

function otherHex() {
  return crypto.randomBytes(16).toString('hex');
}

test('a new client reaches connected via connectionStateChanged and can open a document', async () => {
  const id = uniq('conn');
  const token = srv.mintToken(id);
  const c = srv.newClient(id, { token });
  const states = record(c, 'connectionStateChanged');
  const errors = record(c, 'connectionError');
  await waitFor(c, 'connectionStateChanged', (s) => s === 'connected', 15000);
  assert.equal(c.connectionState, 'connected');
  assert.deepEqual(errors.events, [], 'no connectionError on a clean connect');
  assert.ok(!states.events.includes('denied'));
  // checklist 2: one binary init reply with the same id, 200.
  const [sock] = tap.socketsFor(token);
  assert.ok(sock, 'frame tap saw the socket');
  const init = sock.inits()[0];
  const reply = sock.in.find((f) => f.header.method === 'reply' && f.header.id === init.header.id);
  assert.ok(reply, 'init reply with the same id');
  assert.equal(reply.header.status.code, 200);
  assert.deepEqual(sock.bad, [], 'every server frame is a well-formed binary Twilsock V3.0 frame');
  const doc = await c.document(uniq('conn-doc'));
  assert.match(doc.sid, /^ET[0-9a-f]{32}$/);
  await c.shutdown();
});

// Tokens the server must refuse inside the protocol (init reply 401/403) → state 'denied'.
const refused = [
  {
    name: 'bad signature (tampered signature bytes)',
    token: (s) => {
      const t = s.mintToken('badsig');
      const [h, p, sig] = t.split('.');
      const flipped = (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1);
      return `${h}.${p}.${flipped}`;
    },
  },
  { name: 'signed with the wrong secret', token: (s) => s.mintToken('wrongsecret', { apiSecret: 'not-the-secret-' + otherHex() }) },
  { name: 'unknown API key', token: (s) => s.mintToken('unknownkey', { apiKey: 'SK' + otherHex() }) },
  { name: 'token for a non-existent service', token: (s) => s.mintToken('nosvc', { serviceSid: 'IS' + otherHex() }), statuses: [401, 403] },
  { name: 'expired (exp 60 s ago)', token: (s) => s.mintToken('expired', { ttl: -60 }), expired: true },
  // Not accepted and then closed (410) at once: the SDK cannot renew while it closes, and stayed
  // disconnected with its updateToken pending for good.
  { name: 'expired (exp 30 s ago)', token: (s) => s.mintToken('expired30', { ttl: -30 }), expired: true },
  { name: 'expired (exp 1 s ago)', token: (s) => s.mintToken('expired1', { ttl: -1 }), expired: true },
  { name: 'not yet valid (nbf in 1 h)', token: (s) => s.mintToken('nbf', { nbf: Math.floor(Date.now() / 1000) + 3600 }) },
  { name: 'no data_sync grant', token: (s) => s.mintToken('nogrant', { grant: false }), statuses: [401, 403] },
  { name: 'not a JWT', token: () => 'definitely-not-a-jwt' },
  {
    name: 'wrong alg header (none)',
    token: (s) => {
      const now = Math.floor(Date.now() / 1000);
      const payload = { jti: `${s.creds.apiKey}-${now}`, iss: s.creds.apiKey, sub: s.creds.accountSid, iat: now, exp: now + 600,
        grants: { identity: 'alg', data_sync: { service_sid: s.creds.serviceSid } } };
      const t = signJwt(payload, s.creds.apiSecret, { alg: 'none', typ: 'JWT', cty: 'twilio-fpa;v=1' });
      return t.split('.').slice(0, 2).join('.') + '.';
    },
  },
];

for (const tc of refused) {
  test(`refused token lands in denied: ${tc.name}`, async () => {
    const token = tc.token(srv);
    const c = srv.newClient('refused', { token });
    const expiredEv = record(c, 'tokenExpired');
    const errP = waitFor(c, 'connectionError', (e) => e.terminal === true, 15000);
    await waitForState(c, 'denied', 15000);
    const err = await errP;
    assert.ok((tc.statuses || [401]).includes(err.httpStatusCode), `httpStatusCode ${err.httpStatusCode}`);
    assert.equal(typeof err.errorCode, 'number', `connectionError.errorCode present (${JSON.stringify(err)})`);
    if (tc.expired) {
      assert.equal(err.errorCode, 20104);
      await until(() => expiredEv.events.length === 1, 5000, 'tokenExpired');
    } else {
      assert.notEqual(err.errorCode, 20104, 'a non-expiry refusal must not use 20104');
      await sleep(300);
      assert.equal(expiredEv.events.length, 0, 'tokenExpired must not fire');
    }
    // 'denied' means no automatic retry: the state stays denied and no further init is sent.
    await sleep(800);
    assert.equal(c.connectionState, 'denied');
    const inits = tap.socketsFor(token).flatMap((s) => s.inits());
    assert.equal(inits.length, 1, 'exactly one init (no retries while denied)');
    // updateToken(valid) from denied opens a new socket, sends init and connects
    const good = srv.mintToken(uniq('recover'));
    await c.updateToken(good);
    await waitForState(c, 'connected', 10000);
    assert.equal(tap.socketsFor(good).length, 1);
    await c.document(uniq('recovered'));
    await c.shutdown();
  });
}

test('updateToken while connected: update reply 200, no reconnect, session keeps working', async () => {
  const id = uniq('upd');
  const c = await connect(srv, id);
  const doc = await c.document(uniq('upd-doc'));
  const states = record(c, 'connectionStateChanged');
  await sleep(1100); // a different iat/jti second, so the new token differs from the first
  const fresh = srv.mintToken(id, { ttl: 7200 });
  assert.notEqual(fresh, c.__token);
  await c.updateToken(fresh);
  assert.equal(c.connectionState, 'connected');
  const [sock] = tap.socketsFor(c.__token);
  const upd = sock.out.find((f) => f.header.method === 'update');
  assert.ok(upd, 'an update frame was sent on the same socket');
  const reply = sock.in.find((f) => f.header.method === 'reply' && f.header.id === upd.header.id);
  assert.equal(reply.header.status.code, 200);
  await doc.set({ after: 'update' });
  await sleep(300);
  assert.deepEqual(states.events, [], 'no state change (no reconnect)');
  assert.equal(tap.socketsFor(c.__token).length, 1, 'same socket');
  assert.equal(tap.socketsFor(fresh).length, 0, 'no new socket/init with the new token');
  // a second client sees the write made after the update
  const other = await connect(srv, uniq('upd-o'));
  const d2 = await other.document({ id: doc.sid, mode: 'open_existing' });
  assert.deepEqual(d2.data, { after: 'update' });
});

test('updateToken with an invalid token rejects with 51130 and the client is denied; updateToken(valid) recovers', async () => {
  const id = uniq('updbad');
  const c = await connect(srv, id);
  const bad = srv.mintToken(id, { apiSecret: 'wrong-' + otherHex() });
  const err = await expectReject(c.updateToken(bad), { code: 51130 });
  assert.equal(err.status, 400);
  await waitForState(c, 'denied', 10000);
  // from denied, updateToken(valid) opens a new socket and resolves on a successful init
  const good = srv.mintToken(id, { ttl: 3000 });
  await c.updateToken(good);
  await waitForState(c, 'connected', 10000);
  const doc = await c.document(uniq('updbad-doc'));
  await doc.set({ ok: true });
  assert.equal(tap.socketsFor(good).length, 1, 'reconnected with a fresh init carrying the new token');
});

test('updateToken with a token of another identity is rejected', async () => {
  const c = await connect(srv, uniq('ident-a'));
  const other = srv.mintToken(uniq('ident-b'));
  await expectReject(c.updateToken(other), {});
  await waitForState(c, 'denied', 10000);
});

test('tokenAboutToExpire fires within ~2 s when the token has < 180 s left', async () => {
  const id = uniq('soon');
  const token = srv.mintToken(id, { ttl: 60 });
  const t0 = Date.now();
  const c = srv.newClient(id, { token });
  const p = waitFor(c, 'tokenAboutToExpire', () => true, 10000);
  await waitForState(c, 'connected', 10000);
  const tConnected = Date.now();
  await p;
  assert.ok(Date.now() - tConnected < 2000, `fired ${Date.now() - tConnected} ms after connecting (t0+${Date.now() - t0})`);
  const [sock] = tap.socketsFor(token);
  const cu = sock.in.filter((f) => f.header.method === 'client_update');
  assert.equal(cu.length, 1, 'one client_update frame');
  assert.equal(cu[0].header.client_update_type, 'token_about_to_expire');
  // renewing on the event keeps the client connected
  await c.updateToken(srv.mintToken(id, { ttl: 3600 }));
  assert.equal(c.connectionState, 'connected');
});

test('tokenAboutToExpire fires at exp − 180 s (ttl 185 s → ~5 s after issue)', async () => {
  const id = uniq('t185');
  const token = srv.mintToken(id, { ttl: 185 });
  // exp is whole seconds; compute when exp−180 is in wall-clock time
  const exp = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).exp;
  const due = (exp - 180) * 1000;
  const c = srv.newClient(id, { token });
  let firedAt = null;
  c.on('tokenAboutToExpire', () => { firedAt = firedAt || Date.now(); });
  await waitForState(c, 'connected', 10000);
  await sleep(Math.max(0, due - Date.now() - 2000));
  assert.equal(firedAt, null, 'must not fire well before exp − 180 s');
  await until(() => firedAt !== null, Math.max(0, due - Date.now()) + 3000, 'tokenAboutToExpire');
  assert.ok(Math.abs(firedAt - due) <= 2000, `fired ${firedAt - due} ms from exp−180 s`);
  await c.updateToken(srv.mintToken(id, { ttl: 3600 }));
});

test('a connected token that reaches exp: tokenExpired + disconnected (close 410), then updateToken(fresh) reconnects', async () => {
  const id = uniq('short');
  const token = srv.mintToken(id, { ttl: 4 });
  const c = srv.newClient(id, { token });
  const expired = waitFor(c, 'tokenExpired', () => true, 15000);
  await waitForState(c, 'connected', 10000);
  const doc = await c.document(uniq('short-doc'));
  await expired;
  await waitForState(c, 'disconnected', 10000);
  const [sock] = tap.socketsFor(token);
  const close = sock.in.find((f) => f.header.method === 'close');
  assert.ok(close, 'server sent a close frame');
  assert.equal(close.header.status.code, 410);
  assert.equal(close.header.status.errorCode, 20104);
  // no automatic reconnect
  await sleep(1000);
  assert.equal(c.connectionState, 'disconnected');
  assert.equal(tap.socketsFor(token).length, 1);
  // recovery
  const fresh = srv.mintToken(id, { ttl: 3600 });
  await c.updateToken(fresh);
  await waitForState(c, 'connected', 10000);
  // the document handle is re-subscribed and usable
  const other = await connect(srv, uniq('short-o'));
  const d2 = await other.document({ id: doc.sid, mode: 'open_existing' });
  const seen = waitFor(doc, 'updated', (e) => e.data.v === 1 && e.isLocal === false, 10000);
  await d2.set({ v: 1 });
  await seen;
});

test('shutdown sends close, reaches disconnected and resolves', async () => {
  const c = await connect(srv, uniq('bye'));
  await c.document(uniq('bye-doc'));
  await c.shutdown();
  assert.equal(c.connectionState, 'disconnected');
  const [sock] = tap.socketsFor(c.__token);
  assert.ok(sock.out.some((f) => f.header.method === 'close'), 'close frame sent');
  // the server is still healthy for others
  const c2 = await connect(srv, uniq('bye2'));
  await c2.document(uniq('bye2-doc'));
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
