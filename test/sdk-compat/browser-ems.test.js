'use strict';
// twilio-sync 0.7's prebuilt browser bundle in Chromium, as README's migration guide sets it up: the
// bundle posts the access token to https://ems.us1.twilio.com/v1/token the moment the client is
// created (it offers no option for that URL), so the page's Content-Security-Policy allows only
// Chorus. The browser must refuse that request without sending it, and the SDK's retry must go
// through the websocket to Chorus, which answers the exchange: the client connects and writes.
// A catch-all route aborts (and records) any request to a host other than Chorus's loopback address.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { useServer, eventually } = require('../lib/harness');
const { launch } = require('../browser/helpers');

const srv = useServer({ name: 'sdk-compat-browser' });
const BUNDLE = path.join(path.dirname(require.resolve('twilio-sync-0-7/package.json')), 'dist', 'twilio-sync.js');

// The app's own web server (a real loopback server, so Chromium's local-network checks treat the
// page as local): the page with its CSP and the SDK bundle.
let chrome;
let app;
let appUrl;
test.before(async () => {
  chrome = await launch();
  app = http.createServer((req, res) => {
    const base = srv.baseUrl;
    if (req.url === '/app.html') {
      res.writeHead(200, {
        'content-type': 'text/html',
        'content-security-policy': `default-src 'self' 'unsafe-inline' 'unsafe-eval'; connect-src ${base} ${base.replace(/^http/, 'ws')}`,
      });
      res.end('<!doctype html><meta charset="utf-8"><script src="/twilio-sync.js"></script><p>0.7</p>');
    } else if (req.url === '/twilio-sync.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(fs.readFileSync(BUNDLE));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => app.listen(0, '127.0.0.1', r));
  appUrl = `http://127.0.0.1:${app.address().port}`;
});
test.after(async () => {
  if (chrome) await chrome.close();
  if (app) await new Promise((r) => app.close(r));
});

test('twilio-sync 0.7 bundle: the token exchange never leaves for Twilio, the client works', async () => {
  const base = srv.baseUrl;
  const ws = base.replace(/^http/, 'ws');
  const offHost = [];
  const page = await chrome.newPage();
  await page.route('**/*', async (route) => {
    const u = new URL(route.request().url());
    if (u.hostname !== '127.0.0.1') {
      offHost.push(u.href);
      return route.abort();
    }
    return route.continue();
  });
  await page.goto(`${appUrl}/app.html`);

  const token = srv.mintToken('browser-07');
  await page.evaluate(({ token, base, ws }) => {
    window.__blocked = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__blocked.push(e.blockedURI));
    const Sync = window.Twilio.Sync;
    const SyncClient = Sync.SyncClient || Sync.Client || Sync;
    const client = new SyncClient(token, { logLevel: 'error', Sync: { cdsUri: base }, Twilsock: { uri: ws } });
    window.__result = client.document('browser-07-doc')
      .then((doc) => doc.set({ from: 'chromium' }))
      .then(() => 'ok', (e) => `error: ${e.message}`);
  }, { token, base, ws });

  const result = await eventually(() => page.evaluate(() => Promise.race([
    window.__result, new Promise((r) => setTimeout(() => r(null), 500)),
  ])), 20000, 200).catch((e) => { throw new Error(`${e.message}\n${page.__logs.join('\n')}`); });
  assert.equal(result, 'ok', page.__logs.join('\n'));

  const blocked = await page.evaluate(() => window.__blocked);
  assert.ok(blocked.some((u) => u.startsWith('https://ems.us1.twilio.com')),
    `the SDK's first exchange should have been refused by the CSP; violations: ${JSON.stringify(blocked)}`);
  assert.deepEqual(offHost, [], 'no request may reach the network for a host other than Chorus');

  const docs = await srv.restClient().sync.v1.services(srv.creds.serviceSid).documents.list();
  const doc = docs.find((d) => d.uniqueName === 'browser-07-doc');
  assert.deepEqual(doc && doc.data, { from: 'chromium' });
});
