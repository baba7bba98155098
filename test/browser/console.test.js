'use strict';
// The admin console at /console: sign-in trades HTTP Basic credentials for
// an in-memory console session (POST /admin/v1/Session), listings through
// REST v1, live views through the twilio-sync SDK (token from
// POST /admin/v1/Tokens), the JSON editor's If-Match writes.

const test = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitForState, eventually, sleep } = require('../lib/harness');
const { launch, screenshot } = require('./helpers');

const srv = useServer({ name: 'browser-console' });

let chrome;
test.before(async () => {
  chrome = await launch();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

function basic(user, pass) {
  return 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');
}

async function signIn(page, user, pass) {
  await page.goto(srv.baseUrl + '/console/');
  await page.fill('#login-user', user);
  await page.fill('#login-pass', pass);
  await page.click('#login-submit');
}

async function signedIn(label = 'console') {
  const page = await chrome.newPage();
  await signIn(page, srv.creds.apiKey, srv.creds.apiSecret);
  try {
    await page.waitForSelector('#services-table', { timeout: 10000 });
  } catch (e) {
    throw new Error(`${label}: sign-in failed: ${e.message}\n${page.__logs.join('\n')}`);
  }
  return page;
}

async function openObject(page, kind, sid) {
  await page.goto(`${srv.baseUrl}/console/#/services/${srv.creds.serviceSid}/${kind}/${sid}`);
  await page.waitForSelector('#object-meta');
  await page.waitForFunction(() => document.getElementById('live-state').dataset.state === 'connected', null, { timeout: 15000 });
}

function docs() {
  return srv.restClient().sync.v1.services(srv.creds.serviceSid).documents;
}

test('wrong credentials are refused and nothing is shown', async () => {
  // The admin API itself answers 401 with a Twilio error body.
  for (const auth of [basic(srv.creds.accountSid, 'wrong'), basic(srv.creds.apiKey, srv.creds.authToken), null]) {
    const res = await fetch(srv.baseUrl + '/admin/v1/Stats', { headers: auth ? { Authorization: auth } : {} });
    assert.equal(res.status, 401);
    const body = await res.json();
    assert.equal(body.code, 20003);
    assert.equal(body.connections, undefined);
  }

  const page = await chrome.newPage();
  await signIn(page, srv.creds.accountSid, 'definitely-not-the-token');
  await page.waitForSelector('#login-error .notice.error');
  assert.match(await page.textContent('#login-error'), /refused \(HTTP 401, error 20003\)/);
  assert.equal(await page.$('#services-table'), null);
  assert.equal(await page.isHidden('#topbar'), true, 'no counts or navigation before sign-in');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'nothing stored');
  assert.equal(await page.inputValue('#login-pass'), '', 'the refused secret is cleared');
  await screenshot(page, 'console-login-refused');

  // Navigating straight to a deep link still shows the sign-in form.
  await page.goto(`${srv.baseUrl}/console/#/services/${srv.creds.serviceSid}/documents`);
  await page.waitForSelector('#login-form');
  assert.equal(await page.$('#objects-table'), null);
});

test('lists an object created through REST v1, with paging and search, and shows live SDK updates', async () => {
  const name = 'console-doc-' + Date.now();
  const created = await docs().create({ uniqueName: name, data: { greeting: 'hello', n: 1 } });
  for (let i = 0; i < 21; i++) await docs().create({ uniqueName: `filler-${Date.now()}-${i}`, data: { i } });

  const page = await signedIn();
  // Sign-in with the auth token works too, in another context.
  const page2 = await chrome.newPage();
  await signIn(page2, srv.creds.accountSid, srv.creds.authToken);
  await page2.waitForSelector('#services-table');
  await page2.close();

  await page.waitForSelector(`#services-table tr[data-sid="${srv.creds.serviceSid}"]`);
  await page.waitForFunction(() => /^\d/.test(document.getElementById('stat-writes').textContent));
  await screenshot(page, 'console-services');

  await page.click(`#services-table tr[data-sid="${srv.creds.serviceSid}"] a`);
  await page.waitForSelector('#objects-table');
  // 22+ documents with 20 per page: the created one (oldest) is on page 1; paging works.
  assert.ok(await page.$(`#objects-table tr[data-sid="${created.sid}"]`), 'first page lists the REST-created document');
  assert.equal(await page.$$eval('#objects-table tbody tr', (r) => r.length), 20);
  await page.click('#page-next');
  await page.waitForFunction((sid) => !document.querySelector(`#objects-table tr[data-sid="${sid}"]`), created.sid);
  assert.ok((await page.$$eval('#objects-table tbody tr', (r) => r.length)) >= 2);
  await page.click('#page-prev');
  await page.waitForSelector(`#objects-table tr[data-sid="${created.sid}"]`);
  await screenshot(page, 'console-documents');

  // Search by unique name opens the object view.
  await page.fill('#search', 'no-such-' + Date.now());
  await page.press('#search', 'Enter');
  await page.waitForSelector('#search-message .notice');
  assert.match(await page.textContent('#search-message'), /No document named/);
  await page.fill('#search', name);
  await page.press('#search', 'Enter');
  await page.waitForSelector('#object-meta');
  await page.waitForFunction(() => document.getElementById('live-state').dataset.state === 'connected', null, { timeout: 15000 });
  assert.equal(await page.evaluate(() => location.hash), `#/services/${srv.creds.serviceSid}/documents/${created.sid}`);
  assert.deepEqual(JSON.parse(await page.textContent('#object-data')), { greeting: 'hello', n: 1 });
  assert.equal(await page.textContent('#object-revision'), created.revision);
  assert.match(await page.textContent('#object-ttl'), /Never expires/);

  // A write through the Node SDK appears without a reload.
  await page.evaluate(() => { window.__noReload = true; });
  const client = srv.newClient('sdk-writer');
  await waitForState(client, 'connected');
  const doc = await client.document({ id: name, mode: 'open_existing' });
  await doc.update({ greeting: 'live from the SDK', n: 2 });
  await page.waitForFunction(() => document.getElementById('object-data').textContent.includes('live from the SDK'), null, { timeout: 10000 });
  assert.equal(await page.evaluate(() => window.__noReload), true, 'no page reload');
  assert.equal(await page.textContent('#object-revision'), String(doc.revision));
  assert.deepEqual(JSON.parse(await page.inputValue('#editor')), { greeting: 'live from the SDK', n: 2 }, 'a pristine editor follows');

  // The counts panel sees the console's own SDK connection (and the writer's).
  await page.waitForFunction(() => Number(document.getElementById('stat-connections').textContent) >= 2, null, { timeout: 6000 });
  await page.waitForFunction(() => Number(document.getElementById('stat-subscriptions').textContent) >= 2, null, { timeout: 6000 });
  await screenshot(page, 'console-document');

  // Saving from the editor writes through REST with If-Match.
  await page.fill('#editor', '{"greeting": "saved from the console", "n": 3}');
  await page.click('#editor-save');
  await page.waitForSelector('#editor-message .notice.ok');
  const after = await docs()(created.sid).fetch();
  assert.deepEqual(after.data, { greeting: 'saved from the console', n: 3 });
  // The live event of the console's own write is no conflict (it warned of
  // one after every save when the event came before the answer).
  await page.waitForFunction((rev) => document.getElementById('object-revision').textContent === rev, after.revision, { timeout: 10000 });
  await sleep(300);
  assert.doesNotMatch(await page.textContent('#editor-message'), /Heads-up|conflict/i);
  assert.equal(await page.textContent('#editor-message'), `Saved — now at revision ${after.revision}.`);
  await eventually(() => doc.data.greeting === 'saved from the console', 10000);
});

test('invalid JSON in the editor: a message, nothing written', async () => {
  const name = 'console-bad-json-' + Date.now();
  const created = await docs().create({ uniqueName: name, data: { keep: true } });
  const page = await signedIn();
  await openObject(page, 'documents', created.sid);

  for (const [text, want] of [['{"keep": false,', /Invalid JSON — nothing was written/], ['[1, 2]', /must be a JSON object/]]) {
    await page.fill('#editor', text);
    await page.click('#editor-save');
    await page.waitForSelector('#editor-message .notice.error');
    assert.match(await page.textContent('#editor-message'), want);
    if (text.startsWith('{')) await screenshot(page, 'console-invalid-json');
  }
  const now = await docs()(created.sid).fetch();
  assert.deepEqual(now.data, { keep: true });
  assert.equal(now.revision, created.revision, 'revision unchanged');
});

test('stale revision: a conflict message offering to reload', async () => {
  const name = 'console-conflict-' + Date.now();
  const created = await docs().create({ uniqueName: name, data: { owner: 'console', v: 1 } });
  const page = await signedIn();
  await openObject(page, 'documents', created.sid);

  // Start editing, then someone else writes.
  await page.fill('#editor', '{"owner": "console", "v": 2}');
  const other = await docs()(created.sid).update({ data: { owner: 'someone else', v: 99 } });
  assert.notEqual(other.revision, created.revision);
  await page.waitForFunction(() => document.getElementById('object-data').textContent.includes('someone else'), null, { timeout: 10000 });

  await page.click('#editor-save');
  await page.waitForSelector('#editor-message .notice.conflict');
  assert.match(await page.textContent('#editor-message'), /Conflict — not saved/);
  assert.ok(await page.$('#editor-reload'), 'offers to reload');
  assert.deepEqual((await docs()(created.sid).fetch()).data, { owner: 'someone else', v: 99 }, 'the other write survived');
  await screenshot(page, 'console-conflict');

  await page.click('#editor-reload');
  await page.waitForFunction(() => document.getElementById('editor').value.includes('someone else'));
  // Saving on top of the reloaded revision now works.
  await page.fill('#editor', '{"owner": "console", "v": 100}');
  await page.click('#editor-save');
  await page.waitForSelector('#editor-message .notice.ok');
  assert.deepEqual((await docs()(created.sid).fetch()).data, { owner: 'console', v: 100 });
});

test('map items: edit with If-Match, live item updates', async () => {
  const svc = srv.restClient().sync.v1.services(srv.creds.serviceSid);
  const map = await svc.syncMaps.create({ uniqueName: 'console-map-' + Date.now() });
  await svc.syncMaps(map.sid).syncMapItems.create({ key: 'alpha', data: { score: 1 } });
  await svc.syncMaps(map.sid).syncMapItems.create({ key: 'beta', data: { score: 2 } });

  const page = await signedIn();
  await openObject(page, 'maps', map.sid);
  await page.waitForSelector('#items-table tr[data-ref="beta"]');

  // Live: an SDK write to an item shows up in the table.
  const client = srv.newClient('map-writer');
  await waitForState(client, 'connected');
  const m = await client.map({ id: map.sid, mode: 'open_existing' });
  await m.set('gamma', { score: 3 });
  await page.waitForSelector('#items-table tr[data-ref="gamma"]', { timeout: 10000 });

  await page.click('#items-table tr[data-ref="alpha"] button');
  await page.fill('#item-editor', '{"score": 10}');
  await page.click('#item-editor-save');
  await page.waitForSelector('#item-editor-message .notice.ok');
  const item = await svc.syncMaps(map.sid).syncMapItems('alpha').fetch();
  assert.deepEqual(item.data, { score: 10 });
  await screenshot(page, 'console-map');
});

test('stream tail shows messages published through the SDK', async () => {
  const svc = srv.restClient().sync.v1.services(srv.creds.serviceSid);
  const stream = await svc.syncStreams.create({ uniqueName: 'console-stream-' + Date.now() });
  const page = await signedIn();
  await openObject(page, 'streams', stream.sid);

  const client = srv.newClient('publisher');
  await waitForState(client, 'connected');
  const s = await client.stream({ id: stream.sid, mode: 'open_existing' });
  // Stream messages are not stored or replayed, and there is no public
  // "subscribed" event: warm up until the console's subscription is live.
  await eventually(async () => {
    await s.publishMessage({ warmup: true });
    await sleep(300);
    return page.evaluate(() => document.querySelectorAll('#stream-tail li').length > 0);
  }, 10000, 0);
  const before = await page.$$eval('#stream-tail li', (l) => l.length);
  for (let i = 1; i <= 3; i++) await s.publishMessage({ tick: i, from: 'node' });
  await page.waitForFunction((n) => document.querySelectorAll('#stream-tail li').length >= n + 3, before, { timeout: 10000 });
  const ticks = await page.$$eval('#stream-tail li pre', (l) => l.slice(0, 3).map((p) => JSON.parse(p.textContent).tick));
  assert.deepEqual(ticks, [3, 2, 1], 'every message, newest on top');
  const first = await page.textContent('#stream-tail li:first-child pre');
  assert.deepEqual(JSON.parse(first), { tick: 3, from: 'node' }, 'newest on top');

  // Publishing from the console goes through REST and comes back through the SDK.
  await page.fill('#publish-data', '{"from": "console"}');
  await page.click('#publish');
  await page.waitForFunction(() => document.querySelector('#stream-tail li:first-child pre').textContent.includes('console'), null, { timeout: 10000 });
  await screenshot(page, 'console-stream');
});

test('the webhooks panel shows each service\'s webhook health and recent failures, and replays what was given up on', async () => {
  const http = require('node:http');
  let answer = 404;
  const got = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      got.push({ status: answer, form: new URLSearchParams(body), token: req.headers['i-twilio-idempotency-token'] });
      res.writeHead(answer).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const client = srv.restClient();
  const svc = await client.sync.v1.services.create({
    friendlyName: 'hooked', webhooksFromRestEnabled: true,
    webhookUrl: `http://127.0.0.1:${receiver.address().port}/hook?secret=do-not-show`,
  });
  try {
    await sleep(1100); // service settings are cached for a second
    await client.sync.v1.services(svc.sid).documents.create({ data: { a: 1 } });
    const page = await signedIn('webhooks');
    await page.waitForSelector(`#webhooks-table tr[data-sid="${svc.sid}"]`, { timeout: 10000 });
    await eventually(async () => {
      await page.click('#webhooks-refresh');
      await sleep(200);
      const text = await page.textContent(`#webhooks-table tr[data-sid="${svc.sid}"]`);
      return /HTTP 404/.test(text) && /1 abandoned/.test(text);
    }, 15000);
    const row = `#webhooks-table tr[data-sid="${svc.sid}"]`;
    const text = await page.textContent(row);
    assert.ok(!text.includes('do-not-show'), 'the webhook URL\'s query is not shown');
    assert.match(text, new RegExp(`http://127\\.0\\.0\\.1:${receiver.address().port}/hook`));

    // The webhook given up on is kept: shown with why, and replayed once
    // the receiver is fixed, with the same idempotency token.
    await page.waitForSelector(`${row} [data-kept="1"]`);
    await page.click(`${row} [data-action="show-abandoned"]`);
    await page.waitForSelector(`${row} .abandoned-list li`);
    assert.match(await page.textContent(`${row} .abandoned-list`), /HTTP 404.*document_created/s);
    await screenshot(page, 'console-webhooks');
    assert.equal(got.length, 1);
    answer = 200;
    await page.click(`${row} [data-action="replay-abandoned"]`);
    await page.waitForFunction((sel) => /1 sent again/.test(document.querySelector(sel).textContent), row);
    await eventually(async () => got.length === 2, 10000);
    assert.equal(got[1].status, 200);
    assert.equal(got[1].form.get('EventType'), 'document_created');
    assert.equal(got[1].token, got[0].token, 'a replay keeps the idempotency token');
    await eventually(async () => {
      await page.click('#webhooks-refresh');
      await sleep(200);
      return /none/.test(await page.textContent(`${row} .abandoned-cell`));
    }, 10000);

    // Purge asks twice.
    answer = 404;
    await client.sync.v1.services(svc.sid).documents.create({ data: { a: 2 } });
    await eventually(async () => {
      await page.click('#webhooks-refresh');
      await sleep(200);
      return (await page.$(`${row} [data-kept="1"]`)) !== null;
    }, 15000);
    // It asks with the count as it is when asked, not as the panel last
    // loaded it: one more is given up on behind the panel's back.
    await client.sync.v1.services(svc.sid).documents.create({ data: { a: 3 } });
    await eventually(async () => {
      const res = await fetch(srv.baseUrl + '/admin/v1/Webhooks', { headers: { Authorization: basic(srv.creds.apiKey, srv.creds.apiSecret) } });
      const s = (await res.json()).services.find((x) => x.service_sid === svc.sid);
      return s && s.abandoned_kept === 2;
    }, 15000);
    assert.ok((await page.$(`${row} [data-kept="1"]`)) !== null, 'the panel still shows 1');
    const purgeBtn = `${row} [data-action="purge-abandoned"]`;
    await page.click(purgeBtn);
    await page.waitForFunction((sel) => /sure/.test(document.querySelector(sel).textContent), purgeBtn);
    assert.match(await page.textContent(purgeBtn), /Purge 2: sure\?/);
    await page.click(purgeBtn);
    await page.waitForFunction((sel) => /2 deleted/.test(document.querySelector(sel).textContent), row);
    await page.close();
  } finally {
    await client.sync.v1.services(svc.sid).remove();
    receiver.close();
  }
});

test('the console keeps only a short-lived session, in memory: nothing for other pages of the origin to read', async () => {
  const page = await chrome.newPage();
  const auths = [];
  page.on('request', (r) => {
    const p = new URL(r.url()).pathname;
    if (p.startsWith('/v1/') || p.startsWith('/admin/')) auths.push({ path: `${r.method()} ${p}`, auth: r.headers().authorization || '' });
  });
  await signIn(page, srv.creds.apiKey, srv.creds.apiSecret);
  await page.waitForSelector(`#services-table tr[data-sid="${srv.creds.serviceSid}"]`);
  await page.waitForFunction(() => /^\d/.test(document.getElementById('stat-writes').textContent));

  // Only the sign-in carries the secret; everything after it the session.
  assert.equal(auths[0].path, 'POST /admin/v1/Session');
  assert.match(auths[0].auth, /^Basic /);
  assert.ok(auths.length >= 3, `requests: ${auths.map((a) => a.path).join(', ')}`);
  for (const a of auths.slice(1)) assert.match(a.auth, /^Bearer chorus-session\./, `${a.path} uses the session`);
  const secretB64 = Buffer.from(`${srv.creds.apiKey}:${srv.creds.apiSecret}`).toString('base64');
  assert.ok(auths.slice(1).every((a) => !a.auth.includes(secretB64)));

  // Nothing in storage or cookies, and the secret is nowhere a script can find it.
  const stored = await page.evaluate(() => ({
    session: sessionStorage.length, local: localStorage.length, cookie: document.cookie,
    pass: document.getElementById('login-pass') ? document.getElementById('login-pass').value : '',
  }));
  assert.deepEqual(stored, { session: 0, local: 0, cookie: '', pass: '' });
  const exp = await page.evaluate(() => window.chorusConsole.sessionExpiresAt);
  assert.ok(exp - Date.now() <= 15 * 60 * 1000 + 5000, 'the session is short-lived');

  // The session token authenticates REST, but is not an access token and is refused after sign-out.
  const tokenUsed = auths[auths.length - 1].auth.slice('Bearer '.length);
  let res = await fetch(`${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}`, { headers: { Authorization: 'Bearer ' + tokenUsed } });
  assert.equal(res.status, 200);
  res = await fetch(`${srv.baseUrl}/v1/Services`, { headers: { Authorization: 'Bearer ' + srv.mintToken('alice') } });
  assert.equal(res.status, 401);
  // Nor does it manage credentials, which would outlive it: 403 (20003), use Basic.
  res = await fetch(`${srv.baseUrl}/2010-04-01/Accounts/${srv.creds.accountSid}/Keys.json`,
    { method: 'POST', headers: { Authorization: 'Bearer ' + tokenUsed } });
  assert.equal(res.status, 403);
  assert.equal((await res.json()).code, 20003);

  // Another page of the origin, in the same tab, finds nothing; coming back means signing in again.
  await page.goto(srv.baseUrl + '/');
  assert.deepEqual(await page.evaluate(() => [sessionStorage.length, localStorage.length, document.cookie]), [0, 0, '']);
  await page.goto(srv.baseUrl + '/console/#/services');
  await page.waitForSelector('#login-form');
  await screenshot(page, 'console-session-gone');
});

test('signing out, or leaving the console, ends its session on the server: a copy of the token is refused', async () => {
  const page = await chrome.newPage();
  let token = '';
  page.on('request', (r) => {
    const auth = r.headers().authorization || '';
    if (auth.startsWith('Bearer chorus-session.')) token = auth.slice('Bearer '.length);
  });
  const refusedSoon = async (tok, what) => {
    let status = 0;
    for (let i = 0; i < 50 && status !== 401; i++) {
      if (i) await new Promise((r) => setTimeout(r, 100));
      status = (await fetch(`${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}`, { headers: { Authorization: 'Bearer ' + tok } })).status;
    }
    assert.equal(status, 401, `${what}: the copied token is still accepted`);
    const renew = await fetch(`${srv.baseUrl}/admin/v1/Session`, { method: 'POST', headers: { Authorization: 'Bearer ' + tok } });
    assert.equal(renew.status, 401, `${what}: the copied token can still be renewed`);
  };

  await signIn(page, srv.creds.apiKey, srv.creds.apiSecret);
  await page.waitForSelector(`#services-table tr[data-sid="${srv.creds.serviceSid}"]`);
  const copied = token;
  assert.match(copied, /^chorus-session\./);
  let res = await fetch(`${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}`, { headers: { Authorization: 'Bearer ' + copied } });
  assert.equal(res.status, 200, 'the copy works while signed in');
  await page.click('#sign-out');
  await page.waitForSelector('#login-form');
  await refusedSoon(copied, 'after Sign out');

  // Reloading the console (as closing its tab) ends the session too.
  await signIn(page, srv.creds.apiKey, srv.creds.apiSecret);
  await page.waitForSelector(`#services-table tr[data-sid="${srv.creds.serviceSid}"]`);
  const second = token;
  assert.notEqual(second, copied);
  res = await fetch(`${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}`, { headers: { Authorization: 'Bearer ' + second } });
  assert.equal(res.status, 200, 'a new sign-in works');
  await page.reload();
  await page.waitForSelector('#login-form');
  await refusedSoon(second, 'after a reload');
  await page.close();
});

test('a link with broken percent-encoding shows the not-found page, not a blank one', async () => {
  const page = await signedIn('bad link');
  for (const hash of ['#/services/%', `#/services/${srv.creds.serviceSid}/documents/%E0%A4%A`]) {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.waitForSelector('#not-found');
    assert.match(await page.textContent('#not-found'), /Page not found/);
    assert.equal(await page.isHidden('#topbar'), false, 'still signed in, with the navigation');
  }
  assert.deepEqual(page.__logs.filter((l) => l.startsWith('[pageerror]')), [], 'no uncaught error');
  await screenshot(page, 'console-bad-link');
  await page.click('#not-found a');
  await page.waitForSelector(`#services-table tr[data-sid="${srv.creds.serviceSid}"]`);
  await page.close();
});

// Numbers JavaScript cannot hold exactly (above 2^53, or with more digits
// than a double keeps) must survive an edit in the console byte for byte:
// REST stores the text, and the console must write back that text, never a
// rounded double. Read back as raw text: JSON.parse here would round too.
const BIG_DATA = '{"id":12345678901234567891,"ratio":0.1,"nested":{"big":-98765432109876543210,'
  + '"odd":9007199254740993,"fine":1.0000000000000000001,"list":[18446744073709551615,2,100000000000000000000]},"n":1}';
const BIG_NUMBERS = ['12345678901234567891', '-98765432109876543210', '9007199254740993', '1.0000000000000000001', '18446744073709551615',
  '100000000000000000000'];

async function restRaw(method, path, form) {
  const res = await fetch(srv.baseUrl + path, {
    method,
    headers: { Authorization: basic(srv.creds.apiKey, srv.creds.apiSecret), 'Content-Type': 'application/x-www-form-urlencoded' },
    body: form ? new URLSearchParams(form).toString() : undefined,
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: HTTP ${res.status} ${text}`);
  return text;
}

function assertExact(raw, what) {
  for (const n of BIG_NUMBERS) assert.ok(raw.includes(n), `${what}: ${n} kept exactly, got ${raw}`);
  assert.ok(!/12345678901234567000|-98765432109876540000|9007199254740992\b/.test(raw), `${what}: no rounded value in ${raw}`);
  assert.match(raw, /"ratio":\s*0\.1\b/, `${what}: 0.1 kept`);
}

async function editN(page, id, from, to) {
  const text = await page.inputValue(`#${id}`);
  const edited = text.replace(`"n": ${from}`, `"n": ${to}`);
  assert.notEqual(edited, text, `the editor shows "n": ${from}: ${text}`);
  await page.fill(`#${id}`, edited);
  await page.click(`#${id}-save`);
}

test('numbers beyond what JavaScript holds exactly survive a console edit of a document and a map item', async () => {
  const svcPath = `/v1/Services/${srv.creds.serviceSid}`;
  const doc = JSON.parse(await restRaw('POST', `${svcPath}/Documents`, { UniqueName: 'console-bigint-' + Date.now(), Data: BIG_DATA }));
  assertExact(await restRaw('GET', `${svcPath}/Documents/${doc.sid}`), 'REST itself');

  const page = await signedIn('big numbers');
  await openObject(page, 'documents', doc.sid);
  await editN(page, 'editor', 1, 2);
  await page.waitForSelector('#editor-message .notice');
  const rawDoc = await restRaw('GET', `${svcPath}/Documents/${doc.sid}`);
  assertExact(rawDoc, 'document after the console saved it');
  assert.match(rawDoc, /"n":\s*2\b/, 'the edit itself was saved');
  assert.match(await page.textContent('#editor-message'), /Saved — now at revision/);
  assert.equal(await page.evaluate(() => window.chorusConsole.exactJSON), true, 'Chromium has JSON source text access');
  assert.equal(await page.$('#object-data-warning'), null, 'shown exactly: no warning');
  // What the console shows is the stored text too.
  for (const n of BIG_NUMBERS) {
    assert.ok((await page.textContent('#object-data')).includes(n), `data view shows ${n}`);
    assert.ok((await page.inputValue('#editor')).includes(n), `editor shows ${n}`);
  }
  // A change from elsewhere (the SDK's event rounds: the console refetches).
  await restRaw('POST', `${svcPath}/Documents/${doc.sid}`, { Data: BIG_DATA.replace('"n":1', '"n":3') });
  await page.waitForFunction(() => /"n": 3/.test(document.getElementById('editor').value), null, { timeout: 10000 });
  for (const n of BIG_NUMBERS) assert.ok((await page.inputValue('#editor')).includes(n), `editor after a live update shows ${n}`);
  await editN(page, 'editor', 3, 4);
  await page.waitForSelector('#editor-message .notice.ok');
  assertExact(await restRaw('GET', `${svcPath}/Documents/${doc.sid}`), 'document saved after a live update');
  await screenshot(page, 'console-big-numbers');

  // A map item: the table and the item editor.
  const map = JSON.parse(await restRaw('POST', `${svcPath}/Maps`, { UniqueName: 'console-bigint-map-' + Date.now() }));
  await restRaw('POST', `${svcPath}/Maps/${map.sid}/Items`, { Key: 'big', Data: BIG_DATA });
  await openObject(page, 'maps', map.sid);
  await page.waitForSelector('#items-table tr[data-ref="big"]');
  assert.ok((await page.textContent('#items-table tr[data-ref="big"]')).includes('12345678901234567891'), 'the table shows the exact number');
  await page.click('#items-table tr[data-ref="big"] button');
  await editN(page, 'item-editor', 1, 2);
  await page.waitForSelector('#item-editor-message .notice');
  const rawItem = await restRaw('GET', `${svcPath}/Maps/${map.sid}/Items/big`);
  assertExact(rawItem, 'map item after the console saved it');
  assert.match(rawItem, /"n":\s*2\b/);

  // A stream message published from the console goes out with the text typed.
  const stream = JSON.parse(await restRaw('POST', `${svcPath}/Streams`, { UniqueName: 'console-bigint-stream-' + Date.now() }));
  await openObject(page, 'streams', stream.sid);
  const sent = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().endsWith(`/Streams/${stream.sid}/Messages`)) sent.push(new URLSearchParams(r.postData()).get('Data'));
  });
  await page.fill('#publish-data', BIG_DATA);
  await page.click('#publish');
  await eventually(() => sent.length === 1, 5000);
  assertExact(sent[0], 'published stream message');
  await page.close();
});

test('without JSON source text access the console refuses to save numbers it cannot hold exactly', async () => {
  const svcPath = `/v1/Services/${srv.creds.serviceSid}`;
  const doc = JSON.parse(await restRaw('POST', `${svcPath}/Documents`, { UniqueName: 'console-bigint-old-' + Date.now(), Data: BIG_DATA }));
  const plain = JSON.parse(await restRaw('POST', `${svcPath}/Documents`, { Data: '{"ratio":0.1,"n":1}' }));
  const page = await chrome.newPage();
  // An older browser: no JSON.rawJSON, no reviver context.
  await page.addInitScript(() => {
    delete JSON.rawJSON;
    delete JSON.isRawJSON;
  });
  await signIn(page, srv.creds.apiKey, srv.creds.apiSecret);
  await page.waitForSelector('#services-table');
  assert.equal(await page.evaluate(() => window.chorusConsole.exactJSON), false, 'the fallback is in use');
  await openObject(page, 'documents', doc.sid);
  await page.waitForSelector('#object-data-warning');
  assert.match(await page.textContent('#object-data-warning'), /cannot represent exactly/);
  await editN(page, 'editor', 1, 2);
  await page.waitForSelector('#editor-message .notice.error');
  assert.match(await page.textContent('#editor-message'), /numbers the browser cannot represent exactly; edit it through the REST API/);
  const raw = await restRaw('GET', `${svcPath}/Documents/${doc.sid}`);
  assertExact(raw, 'document the console refused to save');
  assert.equal(JSON.parse(raw).revision, doc.revision, 'nothing written');

  // Safe numbers still save.
  await openObject(page, 'documents', plain.sid);
  assert.equal(await page.$('#object-data-warning'), null, 'no warning for safe numbers');
  await editN(page, 'editor', 1, 2);
  await page.waitForSelector('#editor-message .notice.ok');
  assert.match(await restRaw('GET', `${svcPath}/Documents/${plain.sid}`), /"data":\s*\{"ratio":\s*0\.1,\s*"n":\s*2\}/);
  assert.deepEqual(page.__logs.filter((l) => l.startsWith('[pageerror]')), [], 'no uncaught error');
  await page.close();
});
