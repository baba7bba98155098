'use strict';
// One twilio-sync generation against a running Chorus, in its own process (matrix.test.js spawns
// one per SDK alias, so a crash in one SDK is that SDK's failure and nothing else's).
//
//   node run-sdk.js <alias>     env: CHORUS_URL, CHORUS_CREDS (JSON: accountSid, apiKey, apiSecret, serviceSid)
//
// Prints one line `RESULT <json>`: {alias, version, features: {name: {ok, ms, error?}}, crashes: [...]}.
// Every feature runs even when an earlier one failed (each opens what it needs).
// Debugging: SDK_LOG=debug (0.5–0.7 SDK logs), SDK_STACK=1 (stacks of failed features).

const path = require('node:path');
const twilio = require('twilio');
const { startProxy } = require('../sdk/proxy');

const alias = process.argv[2];
const url = process.env.CHORUS_URL;
const creds = JSON.parse(process.env.CHORUS_CREDS || '{}');
const pkgDir = path.dirname(require.resolve(`${alias}/package.json`));
const version = require(`${alias}/package.json`).version;
const [major, minor] = version.split('.').map(Number);
const sdk = require(alias);
const SyncClient = sdk.SyncClient || sdk.Client || sdk.default || sdk;
// 0.5–0.7: twilsock 0.3 (Twilsock.uri without the path), Sync.cdsUri, and an EMS token exchange.
const ems = major === 0 && minor <= 7;

const crashes = [];
process.on('uncaughtException', (e) => crashes.push(`uncaughtException: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`));
process.on('unhandledRejection', (e) => crashes.push(`unhandledRejection: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`));
process.on('exit', (code) => { if (!done) console.log(`RESULT ${JSON.stringify({ alias, version, features, crashes: [...crashes, `process exit ${code} before the end`] })}`); });

let done = false;
const features = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const unique = `${alias}-${Date.now().toString(36)}`;

function mint(identity, ttl = 3600) {
  const { AccessToken } = twilio.jwt;
  const t = new AccessToken(creds.accountSid, creds.apiKey, creds.apiSecret, { identity, ttl });
  t.addGrant(new AccessToken.SyncGrant({ serviceSid: creds.serviceSid }));
  return t.toJwt();
}

/** A client of the server at base (default CHORUS_URL; a relay's address for the resume feature). */
function newClient(identity, base = url) {
  const token = mint(identity);
  const ws = base.replace(/^http/, 'ws');
  const retryPolicy = { min: 200, max: 2000, randomness: 0.2 };
  if (!ems) {
    return new SyncClient(token, { cdsUri: base, twilsock: { uri: `${ws}/v3/wsconnect` }, retryPolicy, logLevel: 'silent' });
  }
  // twilio-sync 0.7 builds `options.emsClient = options.emsClient || new EmsClient(options)`, so the
  // only way to choose the EMS URL is to pass an EmsClient (twilio-ems-client reads
  // `emsClient.url`); without it the token goes to https://ems.us1.twilio.com before the socket is up.
  const Twilsock = require(require.resolve('twilsock', { paths: [pkgDir] }));
  const { EmsClient } = require(require.resolve('twilio-ems-client', { paths: [pkgDir] }));
  const opts = { logLevel: process.env.SDK_LOG || 'silent', Sync: { cdsUri: base }, Twilsock: { uri: ws } };
  opts.twilsockClient = new Twilsock(token, opts);
  opts.emsClient = new EmsClient({ emsClient: { url: `${base}/v1/token` }, twilsockClient: opts.twilsockClient });
  return new SyncClient(token, opts);
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

// 0.5 emits positional arguments: updated(data, isLocal), itemAdded(item, isLocal),
// itemRemoved(key, isLocal); 0.7 and later one object: {value|data|item|key|message, isLocal}.
const positional = major === 0 && minor <= 5;
const EVENT_FIELD = { updated: 'value', itemAdded: 'item', itemUpdated: 'item', itemRemoved: 'key', messagePublished: 'message' };
function eventArg(name, args) {
  if (!positional || !EVENT_FIELD[name]) return args[0];
  return { [EVENT_FIELD[name]]: args[0], isLocal: args[1] };
}

function waitEvent(emitter, name, pred, ms, what) {
  return withTimeout(new Promise((resolve) => {
    const h = (...raw) => { const e = eventArg(name, raw); let hit = false; try { hit = pred(e); } catch { hit = false; } if (hit) { emitter.removeListener(name, h); resolve(e); } };
    emitter.on(name, h);
  }), ms, what || name);
}

async function until(cond, ms, what) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timeout after ${ms} ms: ${typeof what === 'function' ? what() : what}`);
    await sleep(50);
  }
}

async function feature(name, fn) {
  const t0 = Date.now();
  try {
    await withTimeout(fn(), 20000, name);
    features[name] = { ok: true, ms: Date.now() - t0 };
  } catch (e) {
    features[name] = { ok: false, ms: Date.now() - t0, error: String(e && e.message ? e.message : e).slice(0, 300), ...(process.env.SDK_STACK ? { stack: String(e && e.stack) } : {}) };
  }
}

// Field names differ between generations: 0.x names the payload `value` (documents, items, stream
// messages, the document's `updated` event), 1.0 and later `data`.
const V = major === 0 ? 'value' : 'data';
const val = (x) => x && x[V];
const itemVal = val;
// Stream messages: `value` up to 1.x, `data` from 2.0.
const msgVal = (m) => m && (m.data !== undefined ? m.data : m.value);
const isRemote = (e) => e && e.isLocal === false;

// Pages of 3, forwards to the end and back to the start, in both orders: the pages going back are
// the same pages, in the same order (twilio-sync ≤ 3.1 shows what the server's previous-page token
// gives; 3.4 and later read backwards and reverse themselves). The list has no item 0: 3.4 and later
// take an item id of 0 for "no previous page item" (`!!args.prevPageItemId`) and page wrongly from it.
const idOf = (it) => (it.index !== undefined ? it.index : it.key);
const ids = (p) => p.items.map(idOf).join(',');
async function pages(obj, label) {
  for (const order of ['asc', 'desc']) {
    let p = await obj.getItems({ pageSize: 3, order });
    const forwards = [ids(p)];
    while (p.hasNextPage && forwards.length < 5) {
      p = await p.nextPage();
      forwards.push(ids(p));
    }
    const sizes = forwards.map((f) => f.split(',').length).join(',');
    if (sizes !== '3,3,1') throw new Error(`${label} ${order}: nextPage pages ${forwards.join(' | ')}, want sizes 3,3,1`);
    const backwards = [];
    while (p.hasPrevPage && backwards.length < 5) {
      p = await p.prevPage();
      backwards.push(ids(p));
    }
    const want = [forwards[1], forwards[0]];
    if (backwards.join(' | ') !== want.join(' | ')) {
      throw new Error(`${label} ${order}: prevPage pages ${backwards.join(' | ')}, want ${want.join(' | ')}`);
    }
  }
}

async function main() {
  const a = newClient(`${unique}-a`);
  const b = newClient(`${unique}-b`);
  const ready = (c) => (c.connectionState === 'connected' ? Promise.resolve()
    : waitEvent(c, 'connectionStateChanged', (s) => s === 'connected', 15000, 'connected'));

  const states = [];
  for (const c of [a, b]) c.on('connectionStateChanged', (st) => states.push(st));
  await feature('connect', async () => {
    try {
      await Promise.all([ready(a), ready(b)]);
    } catch (e) {
      throw new Error(`${e.message}; states seen: ${states.join(',')}; now ${a.connectionState}/${b.connectionState}`);
    }
  });

  await feature('document', async () => {
    const d = await a.document(`${unique}-doc`);
    await d.set({ n: 1 });
    const d2 = await b.document(`${unique}-doc`);
    if (val(d2).n !== 1) throw new Error(`second client read ${JSON.stringify(val(d2))}`);
    const seen = waitEvent(d, 'updated', (e) => isRemote(e) && val(e).n === 2, 10000, 'remote document update');
    await d2.set({ n: 2 });
    await seen;
  });

  await feature('list', async () => {
    const l = await a.list(`${unique}-list`);
    await l.push({ i: 0 });
    const l2 = await b.list(`${unique}-list`);
    const seen = waitEvent(l, 'itemAdded', (e) => isRemote(e) && itemVal(e.item).i === 1, 10000, 'remote list itemAdded');
    await l2.push({ i: 1 });
    await seen;
    const upd = waitEvent(l, 'itemUpdated', (e) => isRemote(e) && itemVal(e.item).i === 10, 10000, 'remote list itemUpdated');
    await l2.set(0, { i: 10 });
    await upd;
  });

  await feature('map', async () => {
    const m = await a.map(`${unique}-map`);
    await m.set('k0', { v: 0 });
    const m2 = await b.map(`${unique}-map`);
    const seen = waitEvent(m, 'itemAdded', (e) => isRemote(e) && e.item.key === 'k1', 10000, 'remote map itemAdded');
    await m2.set('k1', { v: 1 });
    await seen;
    const upd = waitEvent(m, 'itemUpdated', (e) => isRemote(e) && e.item.key === 'k0' && itemVal(e.item).v === 5, 10000, 'remote map itemUpdated');
    await m2.set('k0', { v: 5 });
    await upd;
    const rem = waitEvent(m, 'itemRemoved', (e) => isRemote(e) && (e.key === 'k1' || e === 'k1'), 10000, 'remote map itemRemoved');
    await m2.remove('k1');
    await rem;
  });

  if (typeof a.stream !== 'function') {
    features.stream = { ok: true, na: 'the SDK has no streams', ms: 0 }; // 0.5: Message Streams came in 0.6
  } else await feature('stream', async () => {
    const s = await a.stream(`${unique}-stream`);
    const s2 = await b.stream(`${unique}-stream`);
    await sleep(300); // the SDK subscribes in the background; a message before that is not replayed
    const seen = waitEvent(s, 'messagePublished', (e) => isRemote(e) && msgVal(e.message).m === 1, 10000, 'remote stream message');
    for (let i = 0; i < 10; i++) {
      await s2.publishMessage({ m: 1 });
      try { await withTimeout(seen, 1000, 'message'); break; } catch { /* not subscribed yet */ }
    }
    await seen;
  });

  await feature('paging', async () => {
    const l = await a.list(`${unique}-plist`);
    const m = await a.map(`${unique}-pmap`);
    for (let i = 0; i < 7; i++) {
      await l.push({ i });
      await m.set(`k${i}`, { i });
    }
    await l.push({ i: 7 });
    await l.remove(0); // see pages()
    await pages(l, 'list');
    await pages(m, 'map');
  });

  if (typeof b.liveQuery !== 'function') {
    features.liveQuery = { ok: true, na: 'the SDK has no live queries', ms: 0 }; // 0.5–0.8 have none
  } else await feature('liveQuery', async () => {
    // Its subscription is confirmed in the session's event protocol (3 up to 3.0, where a frame
    // that the SDK cannot read threw an uncaught exception), and items then enter it.
    const m = await a.map(`${unique}-lq`);
    await m.set('t1', { s: 'open' });
    await m.set('t2', { s: 'done' });
    const q = await b.liveQuery(`${unique}-lq`, 'data.s == "open"');
    const keys = Object.keys(q.getItems()).sort().join(',');
    if (keys !== 't1') throw new Error(`initial items ${keys}, want t1`);
    const entered = waitEvent(q, 'itemUpdated', (it) => it.key === 't3', 10000, 't3 enters the live query');
    await m.set('t3', { s: 'open' });
    await entered;
    await sleep(300); // an exception from a late frame would come now
    if (crashes.length) throw new Error(crashes[0]);
  });

  await feature('updateToken', async () => {
    // A renewed token differs from the first: twilio-node's JWT is the same to the byte when minted in
    // the same second with the same ttl (jti is key-second), and twilio-sync 0.7 (twilio-ems-client
    // 0.2) answers setToken(sameToken) with the first exchange's reply, status NEW, which it reports as
    // "Failed to update token" without asking the server. A fast run reached this within a second.
    const seen = states.length;
    const t0 = Date.now();
    await a.updateToken(mint(`${unique}-a`, 3599));
    const tUpdated = Date.now() - t0;
    const d = await a.document(`${unique}-doc`);
    await d.set({ n: 3 });
    if (a.connectionState !== 'connected') {
      // 0.5-0.7 take their state from twilio-notifications 0.4, which reports "connecting" while it
      // registers again with the new token (-0-7/node_modules/twilio-notifications/lib/client.js:133-146,
      // 305-311), and updateToken resolves without waiting for that registration. On a loaded machine
      // the set can finish first (seen twice in full suite runs): the client must get back to
      // "connected" on its own, soon.
      try {
        await waitEvent(a, 'connectionStateChanged', (s) => s === 'connected', 5000, 'connected');
      } catch (e) {
        throw new Error(`state ${a.connectionState} 5 s after updateToken (${tUpdated} ms) and a set; ` +
          `states of both clients since: ${states.slice(seen).join(',') || 'none'}`);
      }
    }
    // A token of another identity is refused, and the app survives it. 0.5 and 0.7 resolved
    // updateToken (the EMS exchange accepted the token), then re-registered their notifications on a
    // socket the refused update was closing, and Node exited on the SDK's unhandled rejection
    // "Twilsock disconnected" (a tester's finding). On its own client: a refused update stops it.
    const z = newClient(`${unique}-z`);
    try {
      await ready(z);
      let err = null;
      try {
        await withTimeout(z.updateToken(mint(`${unique}-other`)), 10000, "updateToken with another identity's token");
      } catch (e) {
        err = e;
      }
      if (!err) throw new Error("updateToken with another identity's token resolved");
      if (/^timeout after/.test(err.message)) throw err;
      await sleep(1000); // a late rejection would come now
      if (crashes.length) throw new Error(crashes[0]);
    } finally {
      await withTimeout(z.shutdown(), 3000, 'shutdown').catch(() => {});
    }
  });

  await feature('resume', async () => {
    // A third client, through a relay that is cut: it misses 12 document updates and 12 new map
    // items, and gets all of them, once and in order, when it is back. The matrix server replays at
    // most 5 events per subscription request (--ws-replay-limit), so the replays are interrupted
    // and the SDK subscribes again from the last event it received, at once.
    const px = await startProxy(Number(new URL(url).port));
    const c = newClient(`${unique}-c`, px.baseUrl);
    try {
      await ready(c);
      const d = await a.document(`${unique}-rdoc`);
      await d.set({ n: 0 });
      const m = await a.map(`${unique}-rmap`);
      const dc = await c.document(`${unique}-rdoc`);
      const mc = await c.map(`${unique}-rmap`);
      const docs = [];
      const keys = [];
      dc.on('updated', (...raw) => docs.push(val(eventArg('updated', raw)).n));
      mc.on('itemAdded', (...raw) => keys.push(eventArg('itemAdded', raw).item.key));
      await d.set({ n: 1 });
      await m.set('k1', { i: 1 });
      await until(() => docs.length === 1 && keys.length === 1, 10000, `live events before the cut: doc ${docs}, map ${keys}`);
      const away = waitEvent(c, 'connectionStateChanged', (st) => st !== 'connected', 10000, 'client notices the cut');
      px.cut();
      await away;
      for (let i = 2; i <= 13; i++) {
        await d.set({ n: i });
        await m.set(`k${i}`, { i });
      }
      px.resume();
      await ready(c);
      const t0 = Date.now();
      const want = Array.from({ length: 13 }, (_, i) => i + 1);
      await until(() => docs.length >= 13 && keys.length >= 13, 15000, `replayed after the cut: doc ${docs}, map ${keys}`);
      // An SDK that ignored "interrupted" would wait for its 5 s re-poke at every step (4 or more).
      const ms = Date.now() - t0;
      if (ms > 9000) throw new Error(`the replays took ${ms} ms: "interrupted" was not acted on at once`);
      await sleep(300); // a duplicate would come now
      if (docs.join() !== want.join()) throw new Error(`document updates ${docs}, want ${want}`);
      if (keys.join() !== want.map((i) => `k${i}`).join()) throw new Error(`map items added ${keys}`);
    } finally {
      await withTimeout(c.shutdown(), 3000, 'shutdown').catch(() => {});
      await withTimeout(px.close({ gentle: true }), 3000, 'relay close').catch(() => {});
    }
  });

  await Promise.all([a, b].map((c) => withTimeout(c.shutdown(), 3000, 'shutdown').catch(() => {})));
  await sleep(200);
  features.noCrash = crashes.length === 0 ? { ok: true, ms: 0 } : { ok: false, ms: 0, error: crashes[0].slice(0, 300) };
  done = true;
  console.log(`RESULT ${JSON.stringify({ alias, version, features, crashes })}`);
  process.exit(0);
}

main().catch((e) => { crashes.push(`main: ${e.stack}`); features.noCrash = { ok: false, ms: 0, error: String(e) }; done = true; console.log(`RESULT ${JSON.stringify({ alias, version, features, crashes })}`); process.exit(1); });
