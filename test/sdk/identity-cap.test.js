'use strict';
// --ws-max-per-identity as the official SDK sees it: one identity's sessions beyond the cap are refused
// at init with 429, which twilsock retries with the backoff the reply asks for, so the refused client
// connects by itself once another of the identity's sessions ended; other identities are not affected.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer } = require('../lib/harness');
const { uniq, tap, connect, record, waitForState, sleep } = require('./util');

tap.install();
const srv = useServer({ name: 'sdk-identity-cap', args: ['--ws-max-per-identity', '2'] });

test('an identity over its session cap is refused with 429 and gets in once a place frees', async () => {
  const who = uniq('capped');
  const a = await connect(srv, who);
  const b = await connect(srv, who);

  const token = srv.mintToken(who, { ttl: 3000 }); // not the first two's token, minted the same second
  const c = srv.newClient(who, { token });
  const states = record(c, 'connectionStateChanged');
  const other = await connect(srv, uniq('other'));
  await sleep(1500);
  assert.notEqual(c.connectionState, 'connected', `states of the third session: ${states.events}`);
  const inits = tap.socketsFor(token).flatMap((s) => s.in.filter((f) => f.header.method === 'reply'));
  assert.ok(inits.length >= 1, 'the third session got a reply to its init');
  assert.equal(inits[0].header.status.code, 429);
  assert.equal(inits[0].header.status.errorCode ?? inits[0].header.status.error_code, 20429);

  // The SDK keeps retrying (not a terminal error); a session that ends lets it in.
  assert.ok(!states.events.includes('denied') && !states.events.includes('error'), `states: ${states.events}`);
  await a.shutdown();
  await waitForState(c, 'connected', 20000);
  const doc = await c.document(uniq('cap-doc'));
  await doc.set({ ok: true });

  states.stop();
  await Promise.all([b.shutdown(), c.shutdown(), other.shutdown()]);
});
