'use strict';
// The twilio-sync compatibility matrix: every SDK generation installed as an npm alias in
// test/package.json ("twilio-sync-0-7": "npm:twilio-sync@0.7.5", …, and "twilio-sync" itself) runs
// run-sdk.js in its own process against one Chorus: connect, document/list/map/stream with another
// client's changes, three pages of a list and a map with pageSize 3 and back (both orders), a live
// query, updateToken, and no uncaught
// exception or early exit. Two SDKs run at a time. The results go to
// test/artifacts/sdk-compat.json; `node sdk-compat/table.js --write` turns them into the README table.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, ARTIFACTS_DIR, TEST_DIR } = require('../lib/harness');

const PER_SDK_TIMEOUT_MS = 120000; // a healthy run takes 7–14 s per SDK on a busy 2-core machine
const PARALLEL = 2;
const RESULTS = path.join(ARTIFACTS_DIR, 'sdk-compat.json');
const REPLAY_LIMIT = 5; // run-sdk.js's resume feature misses 12 events of each of two objects

const pkg = require('../package.json');
const aliases = Object.keys(pkg.devDependencies)
  .filter((n) => /^twilio-sync(-[0-9-]+)?$/.test(n))
  .map((alias) => ({ alias, version: require(`${alias}/package.json`).version }))
  .sort((x, y) => cmpVersion(x.version, y.version));

function cmpVersion(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] - pb[i];
  return 0;
}

function runOne(srv, alias) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [path.join(__dirname, 'run-sdk.js'), alias], {
      cwd: TEST_DIR,
      env: { ...process.env, CHORUS_URL: srv.baseUrl, CHORUS_CREDS: JSON.stringify(srv.creds) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err = (err + d).slice(-4000); });
    const timer = setTimeout(() => child.kill('SIGKILL'), PER_SDK_TIMEOUT_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      let r = null;
      try { r = line && JSON.parse(line.slice(7)); } catch { r = null; }
      if (!r) r = { alias, features: {}, crashes: [] };
      r.exit = { code, signal, ms: Date.now() - t0 };
      if (code !== 0) r.crashes.push(`child exited with ${signal || code}; stderr: ${err.slice(-800)}`);
      resolve(r);
    });
  });
}

let srv;
let written = Promise.resolve();
const results = new Map(); // alias → Promise<result>

// The pool starts in before() and runs in the background, two SDKs at a time; each test awaits its
// SDK's result, so every test (not the hook) carries its own time budget.
before(async () => {
  srv = await startServer({ name: 'sdk-compat', args: ['--ws-replay-limit', String(REPLAY_LIMIT)] });
  const queue = [...aliases];
  const resolvers = new Map();
  for (const { alias } of aliases) results.set(alias, new Promise((r) => resolvers.set(alias, r)));
  const workers = Array.from({ length: PARALLEL }, async () => {
    while (queue.length) {
      const { alias } = queue.shift();
      resolvers.get(alias)(await runOne(srv, alias));
    }
  });
  written = Promise.all(workers).then(async () => {
    fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
    const all = [];
    for (const { alias, version } of aliases) all.push({ ...(await results.get(alias)), alias, version });
    fs.writeFileSync(RESULTS, JSON.stringify({ date: new Date().toISOString(), node: process.version, results: all }, null, 2));
  });
});

after(async () => {
  await written;
  if (srv) await srv.stop();
});

test('the resume feature of every SDK went through interrupted replays', async () => {
  await Promise.all(aliases.map(({ alias }) => results.get(alias)));
  const text = await (await fetch(`${srv.baseUrl}/metrics`)).text();
  const m = /^chorus_replays_interrupted_total (\d+)$/m.exec(text);
  assert.ok(m, 'chorus_replays_interrupted_total in /metrics');
  // 12 missed events of each of two objects, 5 per replay: at least 2 interruptions per object.
  assert.ok(Number(m[1]) >= 4 * aliases.length, `${m[1]} interrupted replays for ${aliases.length} SDKs, want at least 4 each`);
});

const FEATURES = ['connect', 'document', 'list', 'map', 'stream', 'paging', 'liveQuery', 'updateToken', 'resume', 'noCrash'];

for (const { alias, version } of aliases) {
  test(`twilio-sync ${version} (${alias})`, async () => {
    const r = await results.get(alias);
    assert.ok(r, 'no result');
    const failed = FEATURES.filter((f) => !(r.features[f] && r.features[f].ok))
      .map((f) => `${f}: ${r.features[f] ? r.features[f].error : 'not run'}`);
    assert.deepEqual(failed, [], `${alias} failed:\n${failed.join('\n')}\ncrashes: ${r.crashes.join('\n')}`);
    assert.equal(r.exit.code, 0, `child exit ${r.exit.code}/${r.exit.signal}`);
  });
}
