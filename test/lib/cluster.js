'use strict';
// A real Chorus cluster for the Node suites (test/cluster/*.test.js): a fresh PostgreSQL database,
// N `chorus serve` processes with --store/--bus/--node and identical TWILIO_* credentials, and a
// real nginx in front of them (websocket upgrade, 1h read timeout, next upstream on error/timeout).
//
//   const { startCluster } = require('../lib/cluster');
//   const cl = await startCluster({ nodes: 3 });
//   cl.nodes[1].newClient('bob');        // SDK client attached directly to node 1 (a ChorusServer)
//   cl.proxy.newClient('alice');         // SDK client through nginx
//   cl.proxy.restClient();               // twilio REST client through nginx
//   await cl.nodes[1].kill('SIGKILL');
//   await cl.stop();                     // clients, nodes, nginx, the database
//
// Needs PostgreSQL (CHORUS_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test; psql is
// used to create and drop the database), NATS (CHORUS_TEST_NATS, default nats://127.0.0.1:4222) and
// nginx (NGINX_BIN, else nginx on PATH or /usr/sbin/nginx). A missing one is an error, never a skip.
// The chorus binary comes from CHORUS_BIN, or is built like lib/harness.js does. nginx's output goes
// to test/artifacts/nginx-<port>-<time>.log; the nodes' to the harness's server-*.log files.

const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const {
  buildChorus,
  defaultCreds,
  freePort,
  sleep,
  ChorusServer,
  ARTIFACTS_DIR,
} = require('./harness');

const DEFAULT_PG = 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable';
const DEFAULT_NATS = 'nats://127.0.0.1:4222';
const START_TIMEOUT_MS = 20000;

function pgAdminUrl() {
  return process.env.CHORUS_TEST_POSTGRES || DEFAULT_PG;
}
function natsUrl() {
  return process.env.CHORUS_TEST_NATS || DEFAULT_NATS;
}

function psql(url, sql) {
  try {
    return execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-Atqc', sql], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 30000,
    }).toString();
  } catch (err) {
    if (err.code === 'ENOENT') {
      throw new Error('psql is not installed: the cluster suite needs it to create its database (apt-get install postgresql-client)');
    }
    const stderr = err.stderr ? err.stderr.toString() : err.message;
    throw new Error(`psql ${sql}: ${stderr.trim()}\n` +
      `The cluster suite needs PostgreSQL at ${pgAdminUrl()} (set CHORUS_TEST_POSTGRES); start the local one with\n` +
      '  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start');
  }
}

/** Create database chorus_nc_<random>; returns { name, url, drop() }. */
function createDatabase() {
  const admin = pgAdminUrl();
  const name = 'chorus_nc_' + crypto.randomBytes(6).toString('hex');
  psql(admin, `CREATE DATABASE ${name}`);
  const u = new URL(admin);
  u.pathname = '/' + name;
  return {
    name,
    url: u.toString(),
    drop() {
      psql(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

function checkTcp(url, what, hint) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port) });
    const timer = setTimeout(() => s.destroy(new Error('timeout')), 2000);
    s.on('connect', () => { clearTimeout(timer); s.end(); resolve(); });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${what} is not reachable at ${u.host}: ${err.message}\n${hint}`));
    });
  });
}

function findNginx() {
  const candidates = [process.env.NGINX_BIN, ...(process.env.PATH || '').split(':').map((d) => d && path.join(d, 'nginx')), '/usr/sbin/nginx']
    .filter(Boolean);
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      return c;
    } catch { /* next */ }
  }
  throw new Error('nginx is not installed: the cluster suite runs a real nginx in front of the nodes.\n' +
    'Install it with: apt-get update && apt-get install -y nginx-light (or set NGINX_BIN)');
}

/**
 * The nginx configuration of the README's "Running a cluster" section, for upstream ports and a
 * listen port, with every path inside the prefix directory.
 */
function nginxConfig({ listenPort, upstreamPorts }) {
  const user = process.getuid && process.getuid() === 0 ? 'user root;\n' : '';
  return `${user}worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path temp/body;
  proxy_temp_path       temp/proxy;
  fastcgi_temp_path     temp/fastcgi;
  uwsgi_temp_path       temp/uwsgi;
  scgi_temp_path        temp/scgi;

  # "Connection: upgrade" for websocket handshakes, "close" otherwise.
  map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
  }

  upstream chorus {
${upstreamPorts.map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=5s;`).join('\n')}
  }

  server {
    listen 127.0.0.1:${listenPort};

    location / {
      proxy_pass http://chorus;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
      proxy_connect_timeout 2s;
      proxy_next_upstream error timeout http_502 http_503;
      proxy_next_upstream_tries 3;
      proxy_buffering off;
    }
  }
}
`;
}

class Nginx {
  constructor({ bin, port, upstreamPorts }) {
    this.bin = bin;
    this.port = port;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-nginx-'));
    fs.mkdirSync(path.join(this.dir, 'temp'));
    fs.mkdirSync(path.join(this.dir, 'logs'));
    fs.writeFileSync(path.join(this.dir, 'nginx.conf'), nginxConfig({ listenPort: port, upstreamPorts }));
    this.proc = null;
    this._out = '';
  }

  async start() {
    fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
    this.logPath = path.join(ARTIFACTS_DIR, `nginx-${this.port}-${Date.now()}.log`);
    const log = fs.createWriteStream(this.logPath, { flags: 'a' });
    const args = ['-p', this.dir + '/', '-c', 'nginx.conf', '-g', `daemon off; pid ${this.dir}/nginx.pid; error_log stderr;`];
    const proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const onData = (c) => {
      this._out = (this._out + c.toString()).slice(-16384);
      log.write(c);
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    this._exit = new Promise((resolve) => {
      proc.on('exit', (code, signal) => resolve({ code, signal }));
      proc.on('error', (error) => resolve({ code: null, signal: null, error }));
    });
    this._exit.then(() => log.end());
    let exited = null;
    this._exit.then((e) => { exited = e; });
    const deadline = Date.now() + START_TIMEOUT_MS;
    let last = '';
    while (Date.now() < deadline) {
      if (exited) {
        throw new Error(`nginx exited at start (code ${exited.code}${exited.error ? ', ' + exited.error.message : ''}):\n${this._out}`);
      }
      try {
        const res = await fetch(`http://127.0.0.1:${this.port}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) return;
        last = `HTTP ${res.status}`;
      } catch (e) {
        last = e.cause ? e.cause.code || e.cause.message : e.message;
      }
      await sleep(100);
    }
    throw new Error(`nginx did not proxy GET /healthz within ${START_TIMEOUT_MS} ms (last: ${last}):\n${this._out}`);
  }

  async stop() {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGQUIT'); // graceful: lets websocket connections go
      const t = sleep(3000).then(() => 'timeout');
      if ((await Promise.race([this._exit, t])) === 'timeout') proc.kill('SIGKILL');
      await this._exit;
    }
    this.proc = null;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  logs() {
    return this._out;
  }
}

/**
 * Start a cluster: `chorus migrate`, then opts.nodes (default 3) `chorus serve` processes at once on
 * free ports, sharing the database and NATS, then nginx. Returns
 * { nodes: ChorusServer[], proxy, nginx, db, creds, bus, stop() }. `proxy` is a ChorusServer-shaped
 * endpoint (baseUrl/wsUrl on nginx; newClient/restClient/closeClients work, process methods do not).
 */
async function startCluster(opts = {}) {
  const count = opts.nodes || 3;
  const nginxBin = findNginx();
  const bus = natsUrl();
  await checkTcp(bus, 'NATS', 'Start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 (or set CHORUS_TEST_NATS)');
  const bin = buildChorus();
  const creds = { ...defaultCreds('chorus-cluster-' + crypto.randomBytes(4).toString('hex')), ...(opts.creds || {}) };
  const db = createDatabase();
  const cl = { nodes: [], proxy: null, nginx: null, db, creds, bus, bin };
  cl.stop = async () => {
    const errs = [];
    if (cl.proxy) await cl.proxy.closeClients();
    await Promise.all(cl.nodes.map((n) => n.closeClients()));
    if (cl.nginx) await cl.nginx.stop().catch((e) => errs.push(e));
    await Promise.all(cl.nodes.map((n) => n.stop().catch((e) => errs.push(e))));
    try {
      db.drop();
    } catch (e) {
      errs.push(e);
    }
    if (errs.length) throw errs[0];
  };
  try {
    execFileSync(bin, ['migrate', '--store', db.url], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
    const ports = [];
    for (let i = 0; i < count; i++) ports.push(await freePort());
    cl.nodes = ports.map((port, i) => new ChorusServer({
      bin,
      port,
      dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-cluster-data-')),
      creds,
      extraArgs: ['--store', db.url, '--bus', bus, '--node', `n${i}`],
      name: `cluster-n${i}`,
    }));
    // All nodes start at once, as in a rollout.
    const started = await Promise.allSettled(cl.nodes.map((n) => n._spawn()));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;

    const nginxPort = await freePort();
    cl.nginx = new Nginx({ bin: nginxBin, port: nginxPort, upstreamPorts: ports });
    await cl.nginx.start();
    cl.proxy = new ChorusServer({ bin: null, port: nginxPort, dataDir: null, creds, name: 'nginx' });
  } catch (err) {
    await cl.stop().catch(() => {});
    throw err;
  }
  return cl;
}

/** GET /metrics of a node, parsed into { name: number }. */
async function metrics(node) {
  const res = await fetch(`${node.baseUrl}/metrics`);
  const text = await res.text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+) ([0-9.e+-]+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

module.exports = { startCluster, createDatabase, nginxConfig, metrics, Nginx };
