'use strict';
// Browser hardening: the quickstart and the console run under their
// Content-Security-Policy without a single violation, and a page on another
// site cannot use credentials the browser holds to write through REST
// (cross-site form submission, CSRF) or frame the console.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { useServer } = require('../lib/harness');
const { launch } = require('./helpers');

const srv = useServer({ name: 'browser-security', args: ['--dev-tokens'] }); // the quickstart needs /token

let chrome;
test.before(async () => {
  chrome = await launch();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

// newWatchedPage records every CSP violation the page reports.
async function newWatchedPage(opts) {
  const page = await chrome.newPage(opts);
  await page.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  return page;
}

async function violations(page) {
  const fromEvents = await page.evaluate(() => window.__csp);
  const fromConsole = page.__logs.filter((l) => /Content Security Policy|Refused to/i.test(l));
  return fromEvents.concat(fromConsole);
}

test('the quickstart runs under its CSP without violations', async () => {
  const page = await newWatchedPage();
  const res = await page.goto(srv.baseUrl + '/');
  const h = res.headers();
  assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(h['x-frame-options'], 'DENY');
  assert.equal(h['x-content-type-options'], 'nosniff');
  assert.equal(h['referrer-policy'], 'no-referrer');
  await page.waitForFunction(
    () => window.chorusGame && window.chorusGame.ready && window.chorusGame.state === 'connected',
    null,
    { timeout: 20000 },
  );
  await page.click('#new-game');
  await page.click('.cell[data-row="1"][data-col="1"]');
  await page.waitForFunction(() => document.querySelector('.cell[data-row="1"][data-col="1"]').textContent === 'X');
  assert.deepEqual(await violations(page), [], page.__logs.join('\n'));
});

test('the console runs under its CSP without violations', async () => {
  const doc = await srv.restClient().sync.v1.services(srv.creds.serviceSid).documents.create({ data: { n: 1 } });
  const page = await newWatchedPage();
  await page.goto(srv.baseUrl + '/console/');
  await page.fill('#login-user', srv.creds.apiKey);
  await page.fill('#login-pass', srv.creds.apiSecret);
  await page.click('#login-submit');
  await page.waitForSelector('#services-table', { timeout: 10000 });
  await page.goto(`${srv.baseUrl}/console/#/services/${srv.creds.serviceSid}/documents/${doc.sid}`);
  await page.waitForSelector('#object-meta');
  await page.waitForFunction(() => document.getElementById('live-state').dataset.state === 'connected', null, { timeout: 15000 });
  assert.deepEqual(await violations(page), [], page.__logs.join('\n'));
});

// otherSite serves one HTML page on localhost (another site than the
// server's 127.0.0.1) and returns its URL.
async function otherSite(html) {
  const s = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((resolve) => s.listen(0, '127.0.0.1', resolve));
  return { url: `http://localhost:${s.address().port}/`, close: () => new Promise((r) => s.close(r)) };
}

test('a page on another site cannot write with the browser\'s credentials', async () => {
  const target = `${srv.baseUrl}/v1/Services/${srv.creds.serviceSid}`;
  const evil = await otherSite(`<!doctype html><form id="f" method="POST" action="${target}">
    <input name="WebhookUrl" value="http://localhost:1/steal"></form>
    <script>document.getElementById('f').submit()</script>`);
  try {
    // The browser attaches the API credentials to every request, as it does
    // with cached Basic credentials.
    const auth = 'Basic ' + Buffer.from(`${srv.creds.accountSid}:${srv.creds.authToken}`).toString('base64');
    const page = await chrome.newPage({ extraHTTPHeaders: { Authorization: auth } });
    const submitted = page.waitForResponse((r) => r.url() === target, { timeout: 15000 });
    await page.goto(evil.url);
    const res = await submitted;
    assert.equal(res.status(), 403);
    assert.equal((await res.json()).code, 20403);
    const svc = await srv.restClient().sync.v1.services(srv.creds.serviceSid).fetch();
    assert.equal(svc.webhookUrl, null, 'the refused form changed nothing');

    // Control: the same form submitted by a page of the server's own origin
    // goes through with those credentials, so the 403 above is the
    // cross-site check and not missing credentials.
    await page.goto(srv.baseUrl + '/healthz');
    const own = page.waitForResponse((r) => r.url() === target, { timeout: 15000 });
    await page.evaluate((url) => {
      const f = document.createElement('form');
      f.method = 'POST';
      f.action = url;
      const i = document.createElement('input');
      i.name = 'FriendlyName';
      i.value = 'same origin';
      f.appendChild(i);
      document.body.appendChild(f);
      f.submit();
    }, target);
    assert.equal((await own).status(), 200);
  } finally {
    await evil.close();
  }
});

test('another site cannot frame the console', async () => {
  const evil = await otherSite(`<!doctype html><iframe id="f" onload="this.dataset.loaded = 1" src="${srv.baseUrl}/console/"></iframe>`);
  try {
    const page = await chrome.newPage();
    await page.goto(evil.url);
    await page.waitForFunction(() => document.getElementById('f').dataset.loaded === '1', null, { timeout: 15000 });
    const frame = page.frames().find((f) => f.url().startsWith(srv.baseUrl));
    const loaded = frame ? await frame.evaluate(() => !!document.getElementById('login-user')).catch(() => false) : false;
    assert.equal(loaded, false, 'the console rendered inside another site\'s frame');
  } finally {
    await evil.close();
  }
});
