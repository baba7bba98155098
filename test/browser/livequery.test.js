'use strict';
// Live Query in Chromium: the browser bundle Chorus serves (/vendor/twilio-sync.min.js) runs
// client.liveQuery and client.instantQuery over a Map that a Node client changes.

const test = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitForState } = require('../lib/harness');
const { launch } = require('./helpers');

const srv = useServer({ name: 'browser-livequery' });

let chrome;
test.before(async () => {
  chrome = await launch();
});
test.after(async () => {
  if (chrome) await chrome.close();
});

test('liveQuery and instantQuery in the browser follow a Map changed from Node', async () => {
  const name = `lq-${Date.now().toString(36)}`;
  const node = srv.newClient('node-writer');
  await waitForState(node, 'connected');
  const map = await node.map(name);
  await map.set('a', { colour: 'red' });
  await map.set('b', { colour: 'blue' });

  const page = await chrome.newPage();
  await page.goto(srv.baseUrl + '/healthz');
  await page.addScriptTag({ url: '/vendor/twilio-sync.min.js' });
  const token = srv.mintToken('browser-reader');
  const fail = async (what, e) => {
    const st = await page.evaluate(() => JSON.stringify(window.lq || null)).catch(() => '?');
    throw new Error(`${what}: ${e.message}\nstate: ${st}\nconsole:\n${page.__logs.join('\n')}`);
  };
  try {
    await page.evaluate(async ({ token, base, ws, name }) => {
      const client = new Twilio.Sync.Client(token, { cdsUri: base, twilsock: { uri: ws } });
      window.lq = { events: [], items: null, search: null, error: null };
      const q = await client.liveQuery(name, 'data.colour in ["red", "green"]');
      window.lq.items = q.getItems();
      q.on('itemUpdated', (it) => window.lq.events.push(['updated', it.key, it.value]));
      q.on('itemRemoved', (e) => window.lq.events.push(['removed', e.key]));
      window.lq.current = () => q.getItems();
      const iq = await client.instantQuery(name);
      iq.on('searchResult', (items) => { window.lq.search = items; });
      await iq.search('key == "b"');
      try {
        await client.liveQuery(name, 'colour == "red"');
      } catch (e) {
        window.lq.error = { status: e.status, code: e.code };
      }
    }, { token, base: srv.baseUrl, ws: srv.wsUrl, name });
  } catch (e) {
    await fail('liveQuery in the page', e);
  }
  let st = await page.evaluate(() => window.lq);
  assert.deepEqual(st.items, { a: { colour: 'red' } });
  assert.deepEqual(st.search, { b: { colour: 'blue' } });
  assert.deepEqual(st.error, { status: 400, code: 54507 });

  // Changes made once liveQuery has resolved reach the page even before its live_query
  // subscription is established: the server keeps them for it until then.
  await map.set('c', { colour: 'green' });
  try {
    await page.waitForFunction(() => window.lq.events.some((e) => e[1] === 'c'), null, { timeout: 15000 });
  } catch (e) {
    await fail('item c entering', e);
  }
  await map.set('a', { colour: 'blue' });
  await map.remove('c');
  try {
    await page.waitForFunction(() => window.lq.events.filter((e) => e[0] === 'removed').length >= 2, null, { timeout: 15000 });
  } catch (e) {
    await fail('items leaving', e);
  }
  st = await page.evaluate(() => ({ events: window.lq.events, current: window.lq.current() }));
  assert.deepEqual(st.events, [['updated', 'c', { colour: 'green' }], ['removed', 'a'], ['removed', 'c']]);
  assert.deepEqual(st.current, {});
  assert.deepEqual(page.__logs.filter((l) => l.startsWith('[pageerror]')), []);
});
