'use strict';
// Live authorization across nodes: read access withdrawn through node 0's REST API (permission
// deleted, ACLs turned on) ends the SDK subscriptions held on node 1 — the SDK emits 'failure'
// (403 / 54007) — and a grant plus reopen restores them.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { waitFor, waitForState } = require('../lib/harness');
const { startCluster } = require('../lib/cluster');

let cl;
before(async () => {
  cl = await startCluster({ nodes: 2 });
});
after(async () => {
  if (cl) await cl.stop();
});

const DENIAL_MS = 10000;
const uniq = (p) => `${p}-${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`;
const service = (rest) => rest.sync.v1.services(cl.creds.serviceSid);
const RO = { read: true, write: false, manage: false };

async function connect(endpoint, identity) {
  const c = endpoint.newClient(identity);
  await waitForState(c, 'connected', 15000);
  return c;
}

async function expectDenied(entity) {
  const err = await waitFor(entity, 'failure', () => true, DENIAL_MS);
  assert.equal(err.status, 403, err.message);
  assert.equal(err.code, 54007, err.message);
}

test('ACLs turned on and a permission deleted on node 0 end subscriptions on node 1', async () => {
  const rest0 = cl.nodes[0].restClient();
  const svc = service(rest0);
  const open = await svc.documents.create({ uniqueName: uniq('open'), data: { n: 0 } });
  const guarded = await svc.documents.create({ uniqueName: uniq('guarded'), data: { n: 0 } });
  const alice = uniq('alice');
  const carol = uniq('carol');
  await svc.documents(guarded.sid).documentPermissions(alice).update(RO);

  const ca = await connect(cl.nodes[1], alice);
  const cc = await connect(cl.nodes[1], carol);
  const da = await ca.document({ id: guarded.sid, mode: 'open_existing' });
  const dc = await cc.document({ id: open.sid, mode: 'open_existing' });
  // Both live (subscriptions are asynchronous: wait for an update).
  const liveA = waitFor(da, 'updated', (e) => e.data.n === 1, DENIAL_MS);
  const liveC = waitFor(dc, 'updated', (e) => e.data.n === 1, DENIAL_MS);
  await svc.documents(guarded.sid).update({ data: { n: 1 } });
  await svc.documents(open.sid).update({ data: { n: 1 } });
  await Promise.all([liveA, liveC]);

  try {
    // ACLs on: carol has no permission on `open`.
    const deniedC = expectDenied(dc);
    await svc.update({ aclEnabled: true });
    await deniedC;

    // alice's permission deleted on node 0.
    const deniedA = expectDenied(da);
    await svc.documents(guarded.sid).documentPermissions(alice).remove();
    await deniedA;

    // Granted again: reopening on node 1 subscribes again.
    await svc.documents(guarded.sid).documentPermissions(alice).update(RO);
    da.close();
    const da2 = await ca.document({ id: guarded.sid, mode: 'open_existing' });
    const again = waitFor(da2, 'updated', (e) => e.data.n === 2, DENIAL_MS);
    await svc.documents(guarded.sid).update({ data: { n: 2 } });
    await again;
  } finally {
    await svc.update({ aclEnabled: false });
  }
});
