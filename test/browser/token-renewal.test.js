'use strict';
// The quickstart renews its Access Token. The server hands out 190 s tokens
// (--token-ttl 190s), so the server's token_about_to_expire (3 minutes before
// exp) arrives about 10 s after connecting; the page must fetch a fresh token
// from /token by presenting its still-valid one (Authorization: Bearer), call
// updateToken, and keep syncing. /token is off by default with operator
// credentials (the harness sets TWILIO_*), so this server has --dev-tokens;
// the last test checks a server without it.

const http = require('node:http');
const test = require('node:test');
const assert = require('node:assert/strict');
const { useServer, startServer, waitForState, eventually } = require('../lib/harness');
const { launch, screenshot } = require('./helpers');

const srv = useServer({ name: 'browser-token', args: ['--token-ttl', '190s', '--dev-tokens'] });

let chrome;
test.before(async () => {
  chrome = await launch();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

test('a short-lived token is renewed and the board keeps syncing', async () => {
  // /token really mints 190 s tokens on this server.
  const { token } = await (await fetch(srv.baseUrl + '/token')).json();
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  assert.equal(claims.exp - claims.iat, 190);

  const page = await chrome.newPage();
  await page.goto(srv.baseUrl + '/');
  await page.waitForFunction(() => window.chorusGame && window.chorusGame.ready && window.chorusGame.state === 'connected',
    null, { timeout: 20000 });
  const tokenFetches = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/token') tokenFetches.push({ method: r.method(), auth: r.headers().authorization || '' });
  });
  const identity = await page.evaluate(() => window.chorusGame.identity);
  assert.match(identity, /^[A-Z][a-z]+[A-Z][a-z]+-[0-9a-z]{20}$/, 'a random identity with 96 random bits');

  const started = Date.now();
  try {
    await page.waitForFunction(() => window.chorusGame.tokenRenewals >= 1, null, { timeout: 45000 });
  } catch (e) {
    const log = await page.evaluate(() => window.chorusGame.log.map((l) => `${l.at} ${l.text}`));
    throw new Error(`no token renewal within 45 s: ${e.message}\napp log:\n${log.join('\n')}\nconsole:\n${page.__logs.join('\n')}`);
  }
  const took = Date.now() - started;
  assert.ok(tokenFetches.length >= 1, 'the page fetched a fresh token from /token');
  assert.equal(tokenFetches[0].method, 'POST');
  assert.match(tokenFetches[0].auth, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/, 'the renewal presents the current token');
  assert.equal(await page.evaluate(() => window.chorusGame.identity), identity, 'the identity is kept');
  const log = await page.evaluate(() => window.chorusGame.log.map((l) => l.text));
  assert.ok(log.some((t) => /^Token renewed \((about to expire|expired)\)$/.test(t)), `activity log: ${log.join(' | ')}`);
  assert.equal(await page.textContent('#renewals'), '1');
  assert.equal(await page.evaluate(() => window.chorusGame.state), 'connected');
  console.log(`# renewal after ${took} ms on the page`);

  // Moves still sync both ways after the renewal.
  const node = srv.newClient('node-player');
  await waitForState(node, 'connected');
  await page.click('#new-game');
  await page.click('.cell[data-row="2"][data-col="1"]');
  const doc = await node.document({ id: 'SyncGame', mode: 'open_existing' });
  await eventually(() => doc.data.board && doc.data.board[2][1] === 'X', 10000);
  await doc.update({ ...doc.data, board: [['O', '', ''], ['', '', ''], ['', 'X', '']], next: 'X', lastMove: { by: 'node-player', mark: 'O', row: 0, col: 0 } });
  await page.waitForFunction(() => document.querySelector('.cell[data-row="0"][data-col="0"]').textContent === 'O', null, { timeout: 10000 });
  assert.match(await page.textContent('#last-move'), /by node-player/);
  await screenshot(page, 'quickstart-token-renewed');
});

test('/token never mints an identity because a caller names it', async () => {
  let res = await fetch(srv.baseUrl + '/token?identity=alice');
  assert.equal(res.status, 400);
  assert.equal((await res.json()).code, 54060);
  // /token renews only the random identities it hands out: a token for a name of the caller's
  // choosing, even one signed with the server's own key, is not renewed.
  for (const name of ['alice', 'system']) {
    res = await fetch(srv.baseUrl + '/token', { method: 'POST', headers: { Authorization: 'Bearer ' + srv.mintToken(name) } });
    assert.equal(res.status, 401, name);
    assert.equal((await res.json()).code, 20106, name);
  }
  // A request a DNS-rebinding page makes (Host of its own name) gets nothing. (fetch() does not
  // let a caller set Host; node:http does.)
  const status = await new Promise((resolve, reject) => {
    const req = http.get(srv.baseUrl + '/token', { headers: { Host: 'rebind.evil.example', Origin: 'http://rebind.evil.example' } }, (r) => {
      r.resume();
      resolve(r.statusCode);
    });
    req.on('error', reject);
  });
  assert.equal(status, 403);
});

test('tokens shorter than the SDK\'s 3-minute warning are renewed too, keeping the identity', async () => {
  // The SDK warned once per token; with 1-minute tokens the page renewed
  // once, then waited for tokenExpired and joined again as someone new.
  const short = await startServer({ name: 'browser-token-short', args: ['--token-ttl', '6s', '--dev-tokens'] });
  try {
    const page = await chrome.newPage();
    await page.goto(short.baseUrl + '/');
    await page.waitForFunction(() => window.chorusGame && window.chorusGame.ready && window.chorusGame.state === 'connected',
      null, { timeout: 20000 });
    const identity = await page.evaluate(() => window.chorusGame.identity);
    try {
      await page.waitForFunction(() => window.chorusGame.tokenRenewals >= 3, null, { timeout: 20000 });
    } catch (e) {
      const log = await page.evaluate(() => window.chorusGame.log.map((l) => `${l.at} ${l.text}`));
      throw new Error(`fewer than 3 renewals of 6 s tokens within 20 s: ${e.message}\napp log:\n${log.join('\n')}`);
    }
    assert.equal(await page.evaluate(() => window.chorusGame.identity), identity, 'the identity is kept');
    const log = await page.evaluate(() => window.chorusGame.log.map((l) => l.text));
    assert.ok(!log.some((t) => /expired/i.test(t)), `no token expired: ${log.join(' | ')}`);
    // Each renewal runs once: the SDK's warnings for a token renewed on
    // schedule are left alone (they doubled the renewals).
    assert.ok(!log.some((t) => /renewed \(about to expire\)/.test(t)), `only scheduled renewals: ${log.join(' | ')}`);
    assert.equal(await page.evaluate(() => window.chorusGame.state), 'connected');
    await page.close();
  } finally {
    await short.stop();
  }
});

test('without --dev-tokens, /token is off and the quickstart says how to turn it on', async () => {
  const off = await startServer({ name: 'browser-token-off' });
  try {
    const res = await fetch(off.baseUrl + '/token');
    assert.equal(res.status, 404);
    const body = await res.json();
    assert.equal(body.code, 20404);
    assert.match(body.message, /--dev-tokens/);
    const page = await chrome.newPage();
    await page.goto(off.baseUrl + '/');
    await page.waitForFunction(() => /--dev-tokens/.test(document.getElementById('turn-text').textContent), null, { timeout: 15000 });
    assert.match(await page.textContent('#turn-text'), /CHORUS_DEV_TOKENS=1/);
    await screenshot(page, 'quickstart-tokens-off');
  } finally {
    await off.stop();
  }
});
