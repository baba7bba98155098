'use strict';
// Shared helpers for the SDK conformance suite (test/sdk/*.test.js). Not a test file itself.
//
// - uniq(prefix): unique object names.
// - connect(srv, identity, opts): a tracked SyncClient that has reached 'connected'.
// - expectReject(promise, {status, code|codes}): assert a rejection and its status/code.
// - record(emitter, event): collect every emission of `event` (first argument) until stop().
// - tap: a read-only WebSocket frame tap (installed on the `ws` package twilsock uses in Node 20),
//   so tests can check wire-level facts the SDK API hides (e.g. that no new `init` was sent, or that
//   no notification arrived for a cancelled sid). It never alters traffic. Every server frame is
//   also checked against the Twilsock V3.0 framing (binary message, exact byte counts).

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');
const { waitFor, waitForState, sleep } = require('../lib/harness');

let seq = 0;
function uniq(prefix = 'obj') {
  seq += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${seq}-${crypto.randomBytes(3).toString('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Frame tap.

const TEXT = new TextDecoder('utf-8', { fatal: true });

/** Parse one Twilsock V3.0 frame strictly; returns {header, payload, payloadText} or throws. */
function parseFrame(buf, { lenientPayload = false } = {}) {
  const bytes = Buffer.isBuffer(buf) ? buf : Buffer.from(buf);
  const cr = bytes.indexOf(0x0d);
  if (cr < 0) throw new Error('no CR after preamble');
  const pre = bytes.subarray(0, cr).toString('latin1').split(' ');
  if (pre.length !== 3 || pre[0] !== 'TWILSOCK' || pre[1] !== 'V3.0' || !/^\d+$/.test(pre[2])) {
    throw new Error(`bad preamble ${JSON.stringify(pre.join(' '))}`);
  }
  if (bytes[cr + 1] !== 0x0a) throw new Error('preamble not terminated by CR LF');
  const h = Number(pre[2]);
  const hStart = cr + 2;
  const headerBytes = bytes.subarray(hStart, hStart + h);
  if (headerBytes.length !== h) throw new Error(`header shorter than ${h} bytes`);
  const header = JSON.parse(TEXT.decode(headerBytes));
  if (typeof header.method !== 'string' || header.id === undefined) throw new Error('header without method/id');
  const size = header.payload_size || 0;
  let payload;
  let payloadText = '';
  if (size > 0) {
    if (bytes[hStart + h] !== 0x0d || bytes[hStart + h + 1] !== 0x0a) throw new Error('no CR LF after header');
    const p = bytes.subarray(hStart + h + 2, hStart + h + 2 + size);
    if (p.length !== size) throw new Error(`payload shorter than payload_size ${size} (got ${p.length})`);
    payloadText = TEXT.decode(p);
    const pt = header.payload_type;
    if (pt === undefined || String(pt).startsWith('application/json')) {
      try {
        payload = JSON.parse(payloadText);
      } catch (e) {
        if (!lenientPayload) throw e;
        payload = payloadText; // the SDK's DELETE frames carry the non-JSON body "data_sync"
      }
    } else payload = payloadText;
  }
  return { header, payload, payloadText };
}

class SocketLog {
  constructor(ws) {
    this.ws = ws;
    this.out = []; // client → server frames
    this.in = []; // server → client frames
    this.bad = []; // server frames that violate the framing (text messages, bad counts, bad JSON)
    this.token = null;
  }
  inits() {
    return this.out.filter((f) => f.header.method === 'init');
  }
  notifications(pred = () => true) {
    return this.in.filter((f) => f.header.method === 'notification' && f.payload && pred(f.payload, f));
  }
}

const tap = {
  installed: false,
  sockets: [],
  install() {
    if (this.installed) return;
    const twilsockDir = path.dirname(require.resolve('twilsock/package.json', {
      paths: [path.dirname(require.resolve('twilio-sync/package.json'))],
    }));
    const WS = require(require.resolve('ws', { paths: [twilsockDir] }));
    const origSend = WS.prototype.send;
    const self = this;
    WS.prototype.send = function send(data, ...rest) {
      let log = this.__chorusTap;
      if (!log) {
        log = new SocketLog(this);
        this.__chorusTap = log;
        self.sockets.push(log);
        this.on('message', (msg, isBinary) => {
          const t = Date.now();
          if (isBinary === false) {
            log.bad.push({ t, error: 'text WebSocket message', raw: String(msg) });
            return;
          }
          try {
            const f = parseFrame(msg instanceof ArrayBuffer ? Buffer.from(msg) : Array.isArray(msg) ? Buffer.concat(msg) : msg);
            f.t = t;
            log.in.push(f);
          } catch (e) {
            log.bad.push({ t, error: e.message, raw: Buffer.from(msg).toString('latin1').slice(0, 300) });
          }
        });
      }
      try {
        const f = parseFrame(Buffer.from(data), { lenientPayload: true });
        f.t = Date.now();
        log.out.push(f);
        if (f.header.method === 'init' && !log.token) log.token = f.header.token;
      } catch {
        /* client frames are the SDK's business */
      }
      return origSend.call(this, data, ...rest);
    };
    this.installed = true;
  },
  /** Every socket (in creation order) whose first init carried `token`. */
  socketsFor(token) {
    return this.sockets.filter((s) => s.token === token);
  },
  /** All sockets opened for any of `tokens` (e.g. a client whose token was updated). */
  socketsForAny(tokens) {
    return this.sockets.filter((s) => tokens.includes(s.token));
  },
  allBad() {
    return this.sockets.flatMap((s) => s.bad);
  },
};

// ---------------------------------------------------------------------------------------------
// Clients and assertions.

/**
 * Create a tracked SyncClient for `identity` and wait until it is connected.
 * Returns the client; client.__token is the token it was created with.
 */
async function connect(srv, identity, opts = {}) {
  const token = opts.token || srv.mintToken(identity, opts);
  const client = srv.newClient(identity, { ...opts, token });
  client.__token = token;
  await waitForState(client, 'connected', 15000);
  return client;
}

/** Assert that `p` rejects with the given HTTP status and Twilio code (or one of `codes`). */
async function expectReject(p, { status, code, codes, message } = {}) {
  let err;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected a rejection (status ${status}, code ${code || codes})`);
  if (status !== undefined) assert.equal(err.status, status, `status of ${err && err.message}`);
  if (code !== undefined) assert.equal(err.code, code, `code of ${err && err.message}`);
  if (codes !== undefined) assert.ok(codes.includes(err.code), `code ${err.code} not in ${codes} (${err.message})`);
  if (message !== undefined) assert.match(err.message, message);
  return err;
}

/**
 * Record every emission of `event` (first argument, or `snap(arg)` taken at emit time; SDK item
 * objects are live and change later) on `emitter` until stop().
 */
function record(emitter, event, snap = (e) => e) {
  const events = [];
  const h = (e) => events.push(snap(e));
  emitter.on(event, h);
  return { events, stop: () => emitter.removeListener(event, h) };
}

/** Wait until `rec.events` satisfies `pred` (polling), failing after `ms`. */
async function until(pred, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    if (pred()) return;
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Run `fn` (async) with a bound: rejects after `ms` with a descriptive error. */
async function bounded(p, ms, what) {
  let timer;
  const t = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Wait until the server has sent `subscription_established` for `sid` to `client` (on a socket
 * opened for `tokens`, default the client's creation token) after time `since` (ms epoch).
 * Streams have no replay, so a subscriber must be established before a publish it should see.
 */
async function established(client, sid, { since = 0, ms = 10000, tokens } = {}) {
  const toks = tokens || [client.__token];
  await until(() => tap.socketsForAny(toks).some((s) => s.notifications((p, f) => f.t >= since
    && p.event_type === 'subscription_established'
    && (p.events || [p.event]).some((e) => e && e.object_sid === sid)).length > 0), ms, `subscription_established for ${sid}`);
}

module.exports = {
  established, uniq, tap, parseFrame, connect, expectReject, record, until, bounded, waitFor, waitForState, sleep };
