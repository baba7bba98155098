'use strict';
// The quickstart at / (web/static/index.html + game.js): two browsers share one
// tic-tac-toe board through the SyncGame document, and the page survives a
// server restart on its own.

const test = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitForState, eventually } = require('../lib/harness');
const { launch, screenshot } = require('./helpers');

const srv = useServer({ name: 'browser-quickstart', args: ['--dev-tokens'] });

let chrome;
test.before(async () => {
  chrome = await launch();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

async function openGame(label) {
  const page = await chrome.newPage();
  await page.goto(srv.baseUrl + '/');
  try {
    await page.waitForFunction(
      () => window.chorusGame && window.chorusGame.ready && window.chorusGame.state === 'connected',
      null,
      { timeout: 20000 },
    );
  } catch (e) {
    throw new Error(`${label}: game page never got ready: ${e.message}\n${page.__logs.join('\n')}`);
  }
  return page;
}

const cell = (r, c) => `.cell[data-row="${r}"][data-col="${c}"]`;

async function waitBoard(page, want, label) {
  try {
    await page.waitForFunction(
      (w) => Array.from(document.querySelectorAll('.cell')).map((e) => e.textContent || '.').join('') === w,
      want,
      { timeout: 10000 },
    );
  } catch {
    // Compare as 9 characters with '.' for empty, for a readable failure.
    const got = await page.$$eval('.cell', (els) => els.map((e) => e.textContent || '.').join(''));
    assert.equal(got, want, `${label}: board`);
  }
}

test('two players see each other\'s moves', async () => {
  const alice = await openGame('alice');
  const bob = await openGame('bob');
  const aliceId = await alice.evaluate(() => window.chorusGame.identity);
  const bobId = await bob.evaluate(() => window.chorusGame.identity);
  assert.notEqual(aliceId, bobId, 'each page gets its own identity from /token');
  assert.equal(await alice.textContent('#identity'), aliceId);
  assert.equal(await alice.getAttribute('#status', 'data-state'), 'connected');

  // Start from a clean board whatever the document held.
  await alice.click('#new-game');
  await waitBoard(bob, '.........', 'bob after new game');

  await alice.click(cell(1, 1));
  await waitBoard(bob, '....X....', 'bob after alice');
  await bob.waitForFunction((id) => document.getElementById('last-move').textContent.includes(id), aliceId);
  assert.match(await bob.textContent('#turn-text'), /^O to move/);

  await bob.click(cell(0, 0));
  await waitBoard(alice, 'O...X....', 'alice after bob');
  assert.match(await alice.textContent('#last-move'), new RegExp(`O on A1 by ${bobId}`));
  assert.match(await alice.textContent('#log'), new RegExp(`${bobId} played O on A1`));

  await alice.click(cell(0, 2));
  await bob.click(cell(2, 2));
  await alice.click(cell(2, 0)); // X: C1, B2, A3 — the anti-diagonal
  await waitBoard(bob, 'O.X.X.X.O', 'bob sees the winning move');
  await bob.waitForFunction(() => document.getElementById('turn-text').textContent.startsWith('X wins'));
  assert.equal(await bob.$$eval('.cell.win', (els) => els.length), 3);
  // The game is over: no empty cell is clickable.
  assert.equal(await bob.$$eval('.cell:not([disabled])', (els) => els.length), 0);

  await screenshot(alice, 'quickstart-alice');
  await screenshot(bob, 'quickstart-bob');

  // A phone-sized viewport for the record.
  const phone = await chrome.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await phone.goto(srv.baseUrl + '/');
  await phone.waitForFunction(() => window.chorusGame && window.chorusGame.ready);
  await waitBoard(phone, 'O.X.X.X.O', 'phone');
  await screenshot(phone, 'quickstart-mobile');

  // And the document really holds the board (read through the Node SDK).
  const watcher = srv.newClient('watcher');
  await waitForState(watcher, 'connected');
  const doc = await watcher.document({ id: 'SyncGame', mode: 'open_existing' });
  assert.deepEqual(doc.data.board, [['O', '', 'X'], ['', 'X', ''], ['X', '', 'O']]);
  assert.equal(doc.data.lastMove.by, aliceId);
});

test('server restart: the page reconnects by itself and the board is intact', async () => {
  const page = await openGame('restart');
  await page.click('#new-game');
  await waitBoard(page, '.........', 'fresh board');
  await page.click(cell(0, 1));
  await waitBoard(page, '.X.......', 'before restart');
  const before = await page.evaluate(() => window.chorusGame.log.length);

  await srv.restart();

  // The SDK notices the drop and comes back without a reload.
  await page.waitForFunction(
    (n) => window.chorusGame.log.slice(n).some((l) => /Connection: (Offline|Connecting|Disconnecting)/.test(l.text)) &&
      window.chorusGame.state === 'connected',
    before,
    { timeout: 30000 },
  );
  const navigations = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  assert.equal(navigations, 1, 'the page was not reloaded');
  await waitBoard(page, '.X.......', 'board shown after reconnect');

  // Still live: a move from the page reaches another client, and back.
  const other = srv.newClient('after-restart');
  await waitForState(other, 'connected');
  const doc = await other.document({ id: 'SyncGame', mode: 'open_existing' });
  assert.deepEqual(doc.data.board[0], ['', 'X', '']);
  await page.click(cell(1, 1));
  await eventually(() => doc.data.board && doc.data.board[1][1] === 'O', 10000);
  await doc.update({ ...doc.data, board: [['', 'X', ''], ['', 'O', ''], ['', '', 'X']], next: 'O', lastMove: { by: 'after-restart', mark: 'X', row: 2, col: 2 } });
  await waitBoard(page, '.X..O...X', 'page sees a write made after the restart');

  // A reload reads the same board from the server.
  await page.reload();
  await page.waitForFunction(() => window.chorusGame && window.chorusGame.ready);
  await waitBoard(page, '.X..O...X', 'after reload');
  await screenshot(page, 'quickstart-after-restart');
});

test('data of another shape written by any player does not stop the page rendering', async () => {
  const page = await openGame('odd');
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const rest = srv.restClient();
  const doc = rest.sync.v1.services(srv.creds.serviceSid).documents('SyncGame');
  // Fields of the wrong type, one an object whose toString is not a function.
  await doc.update({ data: { board: 'nope', lastMove: { by: { toString: 1 }, mark: { valueOf: 2 }, row: 'x', col: [], at: 5 } } });
  await page.waitForFunction(() => document.getElementById('revision').textContent !== '–' &&
    window.chorusGame.doc && window.chorusGame.data && window.chorusGame.data.board === 'nope', null, { timeout: 10000 });
  await waitBoard(page, '.........', 'odd data shows an empty board');
  // The next valid update renders.
  await doc.update({ data: { board: [['X', '', ''], ['', '', ''], ['', '', '']], lastMove: { by: 'rest', mark: 'X', row: 0, col: 0 } } });
  await waitBoard(page, 'X........', 'a valid board after the odd one');
  assert.match(await page.textContent('#last-move'), /X on A1 by rest/);
  assert.deepEqual(errors, [], 'no page error');
});
