'use strict';
// ACL: with the service's AclEnabled=true (set through REST), SDK access follows the per-identity
// permissions set through REST (403 / 54007 otherwise).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, waitFor } = require('../lib/harness');
const { uniq, tap, connect, expectReject } = require('./util');

tap.install();
const srv = useServer({ name: 'acl' });

let svcCache = null;
const rest = () => (svcCache = svcCache || srv.restClient().sync.v1.services(srv.creds.serviceSid));
let aclOn = false;
async function enableAcl() {
  if (aclOn) return;
  const s = await rest().update({ aclEnabled: true });
  assert.equal(s.aclEnabled, true);
  assert.equal((await rest().fetch()).aclEnabled, true);
  aclOn = true;
}

test('documents: no permission → 403/54007 on open; read → open + events but set is 403; write → set works', async () => {
  await enableAcl();
  const name = uniq('acl-doc');
  const doc = await rest().documents.create({ uniqueName: name, data: { secret: 1 } });
  const nobody = uniq('nobody');
  const reader = uniq('reader');
  const writer = uniq('writer');
  await rest().documents(doc.sid).documentPermissions(reader).update({ read: true, write: false, manage: false });
  await rest().documents(doc.sid).documentPermissions(writer).update({ read: true, write: true, manage: false });
  const perm = await rest().documents(doc.sid).documentPermissions(reader).fetch();
  assert.equal(perm.read, true);
  assert.equal(perm.write, false);

  const cn = await connect(srv, nobody);
  await expectReject(cn.document({ id: name, mode: 'open_existing' }), { status: 403, code: 54007 });
  await expectReject(cn.document({ id: doc.sid, mode: 'open_existing' }), { status: 403, code: 54007 });

  const cr = await connect(srv, reader);
  const dr = await cr.document({ id: name, mode: 'open_existing' });
  assert.deepEqual(dr.data, { secret: 1 });
  await expectReject(dr.set({ hacked: true }), { status: 403, code: 54007 });
  await expectReject(dr.update({ hacked: true }), { status: 403, code: 54007 });

  const cw = await connect(srv, writer);
  const dw = await cw.document({ id: doc.sid, mode: 'open_existing' });
  const seen = waitFor(dr, 'updated', (e) => e.data.v === 1 && e.isLocal === false, 10000);
  await dw.set({ v: 1 });
  await seen; // the reader's subscription was accepted
  assert.deepEqual((await rest().documents(doc.sid).fetch()).data, { v: 1 });
  // a writer without manage cannot delete
  await expectReject(dw.removeDocument(), { status: 403, code: 54007 });
});

test('lists and maps: read-only identities cannot write items; no permission cannot open', async () => {
  await enableAcl();
  const list = await rest().syncLists.create({ uniqueName: uniq('acl-list') });
  const map = await rest().syncMaps.create({ uniqueName: uniq('acl-map') });
  await rest().syncLists(list.sid).syncListItems.create({ data: { i: 0 } });
  await rest().syncMaps(map.sid).syncMapItems.create({ key: 'k', data: { m: 0 } });
  const reader = uniq('lreader');
  await rest().syncLists(list.sid).syncListPermissions(reader).update({ read: true, write: false, manage: false });
  await rest().syncMaps(map.sid).syncMapPermissions(reader).update({ read: true, write: false, manage: false });
  const cr = await connect(srv, reader);
  const l = await cr.list({ id: list.sid, mode: 'open_existing' });
  assert.deepEqual((await l.get(0)).data, { i: 0 });
  await expectReject(l.push({ i: 1 }), { status: 403, code: 54007 });
  await expectReject(l.set(0, { i: 9 }), { status: 403, code: 54007 });
  const m = await cr.map({ id: map.sid, mode: 'open_existing' });
  assert.deepEqual((await m.get('k')).data, { m: 0 });
  await expectReject(m.set('k', { m: 9 }), { status: 403, code: 54007 });
  await expectReject(m.remove('k'), { status: 403, code: 54007 });
  const cn = await connect(srv, uniq('lnobody'));
  await expectReject(cn.list({ id: list.sid, mode: 'open_existing' }), { status: 403, code: 54007 });
  await expectReject(cn.map({ id: map.uniqueName, mode: 'open_existing' }), { status: 403, code: 54007 });
});

test('every server frame seen in this file was well-formed', () => {
  assert.deepEqual(tap.allBad(), []);
});
