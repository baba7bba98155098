'use strict';
// Test harness for the Chorus end-to-end suites (test/sdk/*.test.js, test/browser/*.test.js).
//
//   const { startServer, waitFor } = require('../lib/harness');
//   const srv = await startServer();          // builds ./cmd/chorus once, serves on a free port
//   const c = srv.newClient('alice');         // real twilio-sync SyncClient pointed at srv
//   ...
//   await srv.stop();                         // shuts down tracked clients, SIGTERM, removes data dir
//
// Or, inside a node:test file:  const srv = useServer();  (before/after hooks; srv.* proxies the
// live server once `before` has run).
//
// Environment:
//   CHORUS_BIN        use this binary instead of building ./cmd/chorus
//   CHORUS_LOG=1      echo the server's stdout/stderr to this process's stderr
//   CHORUS_KEEP_DATA=1  do not delete the data dir on stop()
//   CHORUS_NO_WS_GUARD=1  do not install the ws close-while-connecting guard (see below)
// Server output is always appended to test/artifacts/server-<name>-<port>-<time>.log (git-ignored;
// one file per server, restarts appended) — srv.logPath; srv.logs() returns the current tail.

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const twilio = require('twilio');
const { SyncClient } = require('twilio-sync');

// SDK teardown bug (Node < 22, where twilsock uses the `ws` package): client.shutdown() while the
// WebSocket upgrade is still pending calls ws.close() after twilsock has nulled socket.onerror
// (twilsock/builds/lib.js WebSocketChannel.close), so ws emits 'error' with no listener and Node
// throws "WebSocket was closed before the connection was established" as an uncaught exception,
// which node:test pins on whatever test is running. This is client-side only and independent of
// the server, so the harness adds a no-op 'error' listener in exactly that situation.
function installWsCloseGuard() {
  if (process.env.CHORUS_NO_WS_GUARD) return;
  let WS;
  try {
    const twilsockDir = path.dirname(require.resolve('twilsock/package.json', {
      paths: [path.dirname(require.resolve('twilio-sync/package.json'))],
    }));
    WS = require(require.resolve('ws', { paths: [twilsockDir] }));
  } catch {
    return; // no ws (global WebSocket in use): nothing to guard
  }
  if (WS.prototype.close.__chorusGuard) return;
  const orig = WS.prototype.close;
  const guarded = function close(...args) {
    if (this.readyState === WS.CONNECTING && this.listenerCount('error') === 0) this.on('error', () => {});
    return orig.apply(this, args);
  };
  guarded.__chorusGuard = true;
  WS.prototype.close = guarded;
}
installWsCloseGuard();

const TEST_DIR = path.resolve(__dirname, '..');
const REPO_ROOT = path.resolve(TEST_DIR, '..');
const ARTIFACTS_DIR = path.join(TEST_DIR, 'artifacts');
const HEALTH_TIMEOUT_MS = 20000;
const STOP_TIMEOUT_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Credentials. Deterministic (derived from a seed) so failures are reproducible; any field can be
// overridden through startServer({ creds: {...} }).

function hex32(seed) {
  return crypto.createHash('sha256').update(seed).digest('hex').slice(0, 32);
}
function alnum32(seed) {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.createHash('sha512').update(seed).digest();
  let s = '';
  for (let i = 0; i < 32; i++) s += abc[bytes[i] % abc.length];
  return s;
}

function defaultCreds(seed = 'chorus-e2e') {
  return {
    accountSid: 'AC' + hex32(seed + '/account'),
    authToken: alnum32(seed + '/auth-token'),
    apiKey: 'SK' + hex32(seed + '/api-key'),
    apiSecret: alnum32(seed + '/api-secret'),
    serviceSid: 'IS' + hex32(seed + '/service'),
  };
}

// ---------------------------------------------------------------------------------------------
// Building the binary, once per `node --test` run.
//
// node --test runs every test file in its own child process, so an in-process cache alone would
// rebuild per file. The binary is cached under a directory keyed by the test runner's pid and start
// time (the parent of each test-file process), so all files of one run share one build; a
// directly-run file (node sdk/x.test.js) builds for itself.

let builtBin = null;

function runnerKey() {
  try {
    const stat = fs.readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    // field 22 (starttime) counts from after the ")" that closes the comm field
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return `${process.ppid}-${fields[19]}`;
  } catch {
    return `self-${process.pid}`;
  }
}

function buildChorus() {
  if (process.env.CHORUS_BIN) return path.resolve(process.env.CHORUS_BIN);
  if (builtBin) return builtBin;
  const dir = path.join(os.tmpdir(), `chorus-e2e-bin-${runnerKey()}`);
  const bin = path.join(dir, 'chorus');
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(dir, { recursive: true });
    const tmp = `${bin}.${process.pid}.tmp`;
    try {
      execFileSync('go', ['build', '-o', tmp, './cmd/chorus'], {
        cwd: REPO_ROOT,
        stdio: ['ignore', 'inherit', 'pipe'],
        timeout: 10 * 60 * 1000,
      });
    } catch (err) {
      const stderr = err.stderr ? err.stderr.toString() : '';
      throw new Error(`go build ./cmd/chorus failed (cwd ${REPO_ROOT}):\n${stderr || err.message}`);
    }
    fs.renameSync(tmp, bin); // atomic: concurrent builders cannot observe a partial file
  }
  builtBin = bin;
  return bin;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A timeout that does not keep the process alive once everything else is done.
const idleSleep = (ms) => new Promise((r) => setTimeout(r, ms).unref());

/**
 * Resolve with the first `event` emitted by `emitter` whose arguments satisfy `predicate`
 * (resolves with the first argument). Rejects after `ms`. Attach BEFORE triggering the change.
 */
function waitFor(emitter, event, predicate = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, handler);
      reject(new Error(`timeout after ${ms} ms waiting for '${event}'`));
    }, ms);
    function handler(...args) {
      let ok;
      try {
        ok = predicate(...args);
      } catch (e) {
        clearTimeout(timer);
        emitter.removeListener(event, handler);
        reject(e);
        return;
      }
      if (!ok) return;
      clearTimeout(timer);
      emitter.removeListener(event, handler);
      resolve(args[0]);
    }
    emitter.on(event, handler);
  });
}

/** Wait until a SyncClient reports `state` (resolves at once if it already does). */
async function waitForState(client, state, ms = 10000) {
  if (client.connectionState === state) return state;
  return waitFor(client, 'connectionStateChanged', (s) => s === state, ms);
}

/** Poll `fn` until it returns a truthy value; rejects after `ms`. */
async function eventually(fn, ms = 5000, every = 50) {
  const deadline = Date.now() + ms;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`eventually: condition not met within ${ms} ms` + (lastErr ? `: ${lastErr.message}` : ''));
    }
    await sleep(every);
  }
}

/** HS256-sign an arbitrary JWT (for malformed/edge-case tokens). header defaults to Twilio's. */
function signJwt(payload, secret, header = { alg: 'HS256', typ: 'JWT', cty: 'twilio-fpa;v=1' }) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64(header)}.${b64(payload)}`;
  const sig = crypto.createHmac('sha256', secret).update(input).digest('base64url');
  return `${input}.${sig}`;
}

/**
 * Mint a Twilio access token (HS256, cty "twilio-fpa;v=1", grants.identity + grants.data_sync)
 * with twilio-node's AccessToken.
 * opts: ttl (seconds, default 3600; negative = already expired; 0 = exp is now — twilio-node would
 *       turn 0 into 3600, so that case is signed by hand with the identical layout), serviceSid,
 *       nbf, accountSid/apiKey/apiSecret (override to forge bad tokens), grant: false (no Sync grant).
 * twilio-node does not clamp ttl (only twilio-go does), so short TTLs such as 185 s are honoured.
 */
function mintTokenWith(creds, identity, opts = {}) {
  const { AccessToken } = twilio.jwt;
  const ttl = opts.ttl === undefined ? 3600 : opts.ttl;
  const accountSid = opts.accountSid || creds.accountSid;
  const apiKey = opts.apiKey || creds.apiKey;
  const apiSecret = opts.apiSecret || creds.apiSecret;
  const grantOpts = { serviceSid: opts.serviceSid || creds.serviceSid };
  if (ttl === 0) {
    const now = Math.floor(Date.now() / 1000);
    const grants = { identity: String(identity) };
    if (opts.grant !== false) grants.data_sync = new AccessToken.SyncGrant(grantOpts).toPayload();
    const payload = { jti: `${apiKey}-${now}`, grants, iat: now, exp: now, iss: apiKey, sub: accountSid };
    if (typeof opts.nbf === 'number') payload.nbf = opts.nbf;
    return signJwt(payload, apiSecret);
  }
  const token = new AccessToken(accountSid, apiKey, apiSecret, { identity, ttl, nbf: opts.nbf });
  if (opts.grant !== false) token.addGrant(new AccessToken.SyncGrant(grantOpts));
  return token.toJwt();
}

// ---------------------------------------------------------------------------------------------
// The server.

class ChorusServer {
  constructor({ bin, port, dataDir, creds, extraEnv, extraArgs, name }) {
    this.bin = bin;
    this.port = port;
    this.host = '127.0.0.1';
    this.dataDir = dataDir;
    this.creds = creds;
    this.extraEnv = extraEnv || {};
    this.extraArgs = extraArgs || [];
    this.name = name || 'chorus';
    this.baseUrl = `http://${this.host}:${port}`;
    this.wsUrl = `ws://${this.host}:${port}/v3/wsconnect`;
    this.proc = null;
    this.clients = new Set();
    this._out = '';
    this._logFile = null;
    this._exit = null;
  }

  env() {
    return {
      ...process.env,
      CHORUS_DATA_DIR: this.dataDir,
      TWILIO_ACCOUNT_SID: this.creds.accountSid,
      TWILIO_AUTH_TOKEN: this.creds.authToken,
      TWILIO_API_KEY: this.creds.apiKey,
      TWILIO_API_SECRET: this.creds.apiSecret,
      TWILIO_SYNC_SERVICE_SID: this.creds.serviceSid,
      // Test receivers listen on loopback (README "Webhooks").
      CHORUS_WEBHOOKS_ALLOW_PRIVATE: '1',
      ...this.extraEnv,
    };
  }

  /** Recent combined stdout+stderr of the current process (last 64 KiB). */
  logs() {
    return this._out;
  }

  async _spawn() {
    fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
    if (!this.logPath) {
      this.logPath = path.join(ARTIFACTS_DIR, `server-${this.name}-${this.port}-${Date.now()}.log`);
    }
    this._starts = (this._starts || 0) + 1;
    this._logFile = fs.createWriteStream(this.logPath, { flags: 'a' });
    this._logFile.write(`=== chorus start #${this._starts} at ${new Date().toISOString()} ===\n`);
    this._out = '';
    const args = ['serve', '--listen', `${this.host}:${this.port}`, ...this.extraArgs];
    const proc = spawn(this.bin, args, { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const logFile = this._logFile;
    const onData = (chunk) => {
      this._out = (this._out + chunk.toString()).slice(-65536);
      logFile.write(chunk);
      if (process.env.CHORUS_LOG) process.stderr.write(chunk);
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    this._exit = new Promise((resolve) => {
      proc.on('exit', (code, signal) => resolve({ code, signal }));
      proc.on('error', (err) => resolve({ code: null, signal: null, error: err }));
    });
    this._exit.then(() => logFile.end());

    // Wait for GET /healthz == 200.
    const deadline = Date.now() + HEALTH_TIMEOUT_MS;
    let exited = null;
    this._exit.then((e) => { exited = e; });
    let lastErr = 'no attempt';
    while (Date.now() < deadline) {
      if (exited) {
        throw new Error(
          `chorus exited before becoming healthy (code ${exited.code}, signal ${exited.signal}` +
            (exited.error ? `, ${exited.error.message}` : '') +
            `)\n--- server output ---\n${this._out}`,
        );
      }
      try {
        const res = await fetch(`${this.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer().catch(() => {});
        if (res.status === 200) return;
        lastErr = `HTTP ${res.status}`;
      } catch (e) {
        lastErr = e.cause ? e.cause.code || e.cause.message : e.message;
      }
      await sleep(100);
    }
    await this._terminate('SIGKILL');
    throw new Error(
      `chorus did not answer 200 on GET /healthz within ${HEALTH_TIMEOUT_MS} ms (last: ${lastErr})\n` +
        `--- server output ---\n${this._out}`,
    );
  }

  async _terminate(signal) {
    const proc = this.proc;
    if (!proc) return null;
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const timeout = idleSleep(STOP_TIMEOUT_MS).then(() => 'timeout');
      if ((await Promise.race([this._exit, timeout])) === 'timeout') {
        proc.kill('SIGKILL');
      }
    }
    const exit = await this._exit;
    this.proc = null;
    return exit;
  }

  /** Send `signal` (default SIGKILL) and wait for the process to exit. Data dir is kept. */
  async kill(signal = 'SIGKILL') {
    return this._terminate(signal);
  }

  /** Graceful stop (SIGTERM; SIGKILL after 5 s) and start again on the same port and data dir. */
  async restart() {
    await this._terminate('SIGTERM');
    await this._spawn();
  }

  /** Start again after kill() (same port and data dir). */
  async start() {
    if (this.proc) throw new Error('chorus already running');
    await this._spawn();
  }

  /** Shut down tracked SDK clients, stop the server, remove the data dir. Returns the exit info. */
  async stop() {
    await this.closeClients();
    const exit = await this._terminate('SIGTERM');
    if (!process.env.CHORUS_KEEP_DATA) fs.rmSync(this.dataDir, { recursive: true, force: true });
    return exit;
  }

  get running() {
    return !!this.proc;
  }

  mintToken(identity, opts = {}) {
    return mintTokenWith(this.creds, identity, opts);
  }

  /**
   * A real SyncClient pointed at this server: {cdsUri: baseUrl, twilsock: {uri: wsUrl},
   * retryPolicy: {min: 200, max: 2000, randomness: 0.2}, logLevel: 'error'}.
   * opts: ttl/serviceSid/... (token, see mintToken), token (use as is), clientOptions (merged
   * over the defaults; `twilsock` is merged one level; e.g. {Sync: {enableSessionStorage: false}}).
   * Clients are tracked and shut down by stop()/closeClients().
   */
  newClient(identity, opts = {}) {
    const token = opts.token || this.mintToken(identity, opts);
    const extra = opts.clientOptions || {};
    // NB: the reconnect policy must be the TOP-LEVEL `retryPolicy` option. twilio-sync passes its
    // whole options object to twilsock, whose Configuration reads `options.retryPolicy`
    // (twilsock/builds/lib.js:380); `twilsock.retryPolicy` is silently ignored (verified).
    // A fresh options object per client matters too: the SyncClient constructor mutates it
    // (sets options.twilsockClient, so a reused object would share the first client's socket).
    const client = new SyncClient(token, {
      cdsUri: this.baseUrl,
      logLevel: 'error',
      retryPolicy: { min: 200, max: 2000, randomness: 0.2 },
      ...extra,
      twilsock: { uri: this.wsUrl, ...(extra.twilsock || {}) },
    });
    this.clients.add(client);
    return client;
  }

  async closeClients() {
    const all = [...this.clients];
    this.clients.clear();
    await Promise.all(
      all.map((c) => Promise.race([c.shutdown().catch(() => {}), idleSleep(3000)])),
    );
  }

  /**
   * twilio-node REST client for the server's REST API v1 (/v1/Services/...), authenticated with
   * the API key. twilio-node 6.3.1: every product is a Domain whose `baseUrl` property (set in
   * lib/base/Domain.js, read on each request by Domain.absoluteUrl) defaults to
   * "https://sync.twilio.com"; assigning client.sync.baseUrl redirects all sync.v1 calls
   * (verified against a plain http server). Paging follows meta.next_page_url verbatim
   * (lib/base/Page.js), so the server must return absolute URLs there. Do not set TWILIO_REGION
   * / TWILIO_EDGE in the environment: BaseTwilio.getHostname would rewrite the host.
   */
  restClient(opts = {}) {
    const c = twilio(opts.username || this.creds.apiKey, opts.password || this.creds.apiSecret, {
      accountSid: this.creds.accountSid,
      autoRetry: false,
    });
    c.sync.baseUrl = this.baseUrl;
    return c;
  }

  /** Same, authenticated with Account SID + Auth Token. */
  restClientWithAuthToken() {
    const c = twilio(this.creds.accountSid, this.creds.authToken);
    c.sync.baseUrl = this.baseUrl;
    return c;
  }
}

/**
 * Build (once) and start a Chorus server on a free port with a fresh data dir.
 * opts: creds (partial override), env (extra env vars), args (extra CLI args after --listen),
 *       port, dataDir, name (log file label).
 */
async function startServer(opts = {}) {
  const bin = buildChorus();
  const port = opts.port || (await freePort());
  const dataDir = opts.dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-e2e-data-'));
  const srv = new ChorusServer({
    bin,
    port,
    dataDir,
    creds: { ...defaultCreds(), ...(opts.creds || {}) },
    extraEnv: opts.env,
    extraArgs: opts.args,
    name: opts.name,
  });
  try {
    await srv._spawn();
  } catch (err) {
    if (!opts.dataDir && !process.env.CHORUS_KEEP_DATA) fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  return srv;
}

/**
 * node:test convenience: starts one server in `before`, stops it in `after`, and returns a proxy
 * that forwards to it (so `const srv = useServer()` at module top level works).
 */
function useServer(opts = {}) {
  const { before, after } = require('node:test');
  let srv = null;
  before(async () => {
    srv = await startServer(opts);
  });
  after(async () => {
    if (srv) await srv.stop();
  });
  return new Proxy(
    {},
    {
      get(_t, prop) {
        if (!srv) throw new Error(`server not started yet (accessed .${String(prop)} before the before() hook)`);
        const v = srv[prop];
        return typeof v === 'function' ? v.bind(srv) : v;
      },
    },
  );
}

module.exports = {
  startServer,
  useServer,
  buildChorus,
  defaultCreds,
  mintTokenWith,
  signJwt,
  waitFor,
  waitForState,
  eventually,
  sleep,
  freePort,
  ChorusServer,
  SyncClient,
  twilio,
  REPO_ROOT,
  TEST_DIR,
  ARTIFACTS_DIR,
};
