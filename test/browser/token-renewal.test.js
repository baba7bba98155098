'use strict';
// The quickstart renews its Access Token. The server hands out 190 s tokens
// (--token-ttl 190s), so the server's token_about_to_expire (3 minutes before
// exp) arrives about 10 s after connecting; the page must fetch a fresh token
// from /token, call updateToken, and keep syncing.

const test = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitForState, eventually } = require('../lib/harness');
const { launch, screenshot } = require('./helpers');

const srv = useServer({ name: 'browser-token', args: ['--token-ttl', '190s'] });

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
    if (new URL(r.url()).pathname === '/token') tokenFetches.push(Date.now());
  });

  const started = Date.now();
  try {
    await page.waitForFunction(() => window.chorusGame.tokenRenewals >= 1, null, { timeout: 45000 });
  } catch (e) {
    const log = await page.evaluate(() => window.chorusGame.log.map((l) => `${l.at} ${l.text}`));
    throw new Error(`no token renewal within 45 s: ${e.message}\napp log:\n${log.join('\n')}\nconsole:\n${page.__logs.join('\n')}`);
  }
  const took = Date.now() - started;
  assert.ok(tokenFetches.length >= 1, 'the page fetched a fresh token from /token');
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
