'use strict';
// A minimal raw Twilsock V3.0 client (ws + the framing of spec §1), for the few checks the SDK API
// cannot express (e.g. a PUT with a deliberately stale If-Match, unknown frames).

const crypto = require('node:crypto');
const path = require('node:path');
const { parseFrame } = require('./util');

function wsModule() {
  const twilsockDir = path.dirname(require.resolve('twilsock/package.json', {
    paths: [path.dirname(require.resolve('twilio-sync/package.json'))],
  }));
  return require(require.resolve('ws', { paths: [twilsockDir] }));
}

function frame(header, payload) {
  const body = payload === undefined ? '' : typeof payload === 'string' ? payload : JSON.stringify(payload);
  const h = JSON.stringify({ ...header, payload_size: Buffer.byteLength(body) });
  return Buffer.concat([Buffer.from(`TWILSOCK V3.0 ${Buffer.byteLength(h)}\r\n${h}\r\n`), Buffer.from(body)]);
}

const tmId = () => 'TM' + crypto.randomUUID();

class RawClient {
  constructor(url) {
    this.url = url;
    this.frames = [];
    this.bad = [];
    this.pending = new Map();
    this.closed = false;
  }

  async open(token) {
    const WS = wsModule();
    this.ws = new WS(this.url);
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        this.bad.push('text message');
        return;
      }
      let f;
      try {
        f = parseFrame(data);
      } catch (e) {
        this.bad.push(e.message);
        return;
      }
      f.t = Date.now();
      this.frames.push(f);
      if (f.header.method === 'reply') {
        const p = this.pending.get(f.header.id);
        if (p) {
          this.pending.delete(f.header.id);
          p(f);
        }
      } else {
        this.ws.send(frame({ id: f.header.id, method: 'reply', payload_type: 'application/json', status: { code: 200, status: 'OK' } }));
      }
    });
    this.ws.on('close', () => { this.closed = true; });
    await new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    const reply = await this.request({
      method: 'init', token, continuation_token: null,
      metadata: { ver: 'raw', env: 'Node.js', osa: 64 },
      registrations: [{ product: 'data_sync', type: 'ers', notification_protocol_version: 0, message_types: ['twilio.sync.event'] }],
      tweaks: null, capabilities: ['client_update'],
    });
    return reply;
  }

  /** Send a frame and resolve with the reply of the same id (rejects after ms). */
  request(header, payload, ms = 10000) {
    const id = tmId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no reply to ${header.method} within ${ms} ms`));
      }, ms);
      this.pending.set(id, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      this.ws.send(frame({ id, ...header }, payload));
    });
  }

  /** Send a frame that expects no reply. */
  send(header, payload) {
    this.ws.send(frame({ id: tmId(), ...header }, payload));
  }

  /** Tunnelled HTTP request; resolves {status, body, reply}. url may be absolute (from a response) or a path. */
  async http(method, url, { body, headers = {}, params = {} } = {}) {
    const u = new URL(url, this.url.replace(/^ws/, 'http'));
    const reply = await this.request({
      method: 'message', active_grant: 'data_sync', payload_type: 'application/json',
      http_request: { host: u.host, path: u.pathname, method, params,
        headers: { 'Content-Type': 'application/json', ...headers } },
    }, body);
    return { status: reply.header.http_status && reply.header.http_status.code, body: reply.payload, reply };
  }

  close() {
    if (this.ws) this.ws.close();
  }
}

module.exports = { RawClient, frame };
