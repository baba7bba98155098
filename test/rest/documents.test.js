'use strict';
// REST v1 Documents (operations 6-10) and Document Permissions (11-14) through the official
// `twilio` Node helper library.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { useServer, twilio } = require('../lib/harness');
const { sidRe, uniq, expectRestError, assertExpires } = require('./util');

const srv = useServer({ name: 'rest-documents' });

let svcSid; // a fresh service per file so listings are deterministic
const svc = () => srv.restClient().sync.v1.services(svcSid);

// (Node 20 runs a top-level before() immediately and concurrently with useServer's, so the
// suite service is created lazily by the first test instead.)
let ready$ = null;
const ready = () => (ready$ = ready$ || srv.restClient().sync.v1.services.create({ friendlyName: 'documents suite' })
  .then((s) => { svcSid = s.sid; }));

function assertDocument(d, { uniqueName, data }) {
  assert.match(d.sid, sidRe('ET'));
  assert.equal(d.uniqueName, uniqueName);
  assert.equal(d.accountSid, srv.creds.accountSid);
  assert.equal(d.serviceSid, svcSid);
  const url = `${srv.baseUrl}/v1/Services/${svcSid}/Documents/${d.sid}`;
  assert.equal(d.url, url, 'url is absolute and uses the SID');
  assert.deepEqual(d.links, { permissions: `${url}/Permissions` });
  assert.equal(typeof d.revision, 'string');
  assert.deepEqual(d.data, data);
  assert.equal(d.createdBy, 'system', 'created through REST');
  assert.ok(d.dateCreated instanceof Date && d.dateUpdated instanceof Date);
  assert.ok(d.dateUpdated >= d.dateCreated);
}

test('documents.create / fetch (by SID and unique name) / update / remove: every field', async () => {
  await ready();
  const name = uniq('doc');
  const t0 = Date.now();
  const res = await svc().documents.createWithHttpInfo({ uniqueName: name, data: { greeting: 'hi', n: 1, nested: { a: [1, 2] } } });
  const t1 = Date.now();
  assert.equal(res.statusCode, 201);
  const created = res.body;
  assertDocument(created, { uniqueName: name, data: { greeting: 'hi', n: 1, nested: { a: [1, 2] } } });
  assert.equal(created.dateExpires, null, 'no TTL: date_expires is null');
  assert.equal(created.revision, '0', 'a fresh document has revision "0"');
  assert.equal(res.headers.etag, created.revision, 'ETag carries the revision');
  assert.ok(created.dateCreated.getTime() >= Math.floor(t0 / 1000) * 1000 && created.dateCreated.getTime() <= t1);

  const bySid = await svc().documents(created.sid).fetchWithHttpInfo();
  assert.equal(bySid.statusCode, 200);
  assert.deepEqual(bySid.body.toJSON(), created.toJSON());
  assert.equal(bySid.headers.etag, created.revision);
  const byName = await svc().documents(name).fetch();
  assert.deepEqual(byName.toJSON(), created.toJSON());

  // Update replaces data as a whole and bumps the revision.
  const upd = await svc().documents(created.sid).updateWithHttpInfo({ data: { replaced: true } });
  assert.equal(upd.statusCode, 200);
  assertDocument(upd.body, { uniqueName: name, data: { replaced: true } });
  assert.notEqual(upd.body.revision, created.revision, 'revision changes on update');
  assert.equal(upd.headers.etag, upd.body.revision);
  assert.equal(upd.body.dateCreated.getTime(), created.dateCreated.getTime());

  // Update by unique name, via the instance helper.
  const upd2 = await byName.update({ data: { second: 2 } });
  assert.deepEqual(upd2.data, { second: 2 });
  assert.notEqual(upd2.revision, upd.body.revision);
  assert.deepEqual((await svc().documents(created.sid).fetch()).data, { second: 2 });

  // Data given as a JSON string is passed through verbatim by the library.
  const asString = await svc().documents(name).update({ data: JSON.stringify({ s: 'str' }) });
  assert.deepEqual(asString.data, { s: 'str' });

  assert.equal(await svc().documents(name).remove(), true);
  await expectRestError(svc().documents(created.sid).fetch(), 404, 20404, 'fetch removed document by SID');
  await expectRestError(svc().documents(name).fetch(), 404, 20404, 'fetch removed document by name');
  await expectRestError(svc().documents(created.sid).remove(), 404, 20404, 'remove twice');
  // The unique name is free again.
  const again = await svc().documents.create({ uniqueName: name });
  assert.notEqual(again.sid, created.sid);
  await again.remove();
});

test('a document created with no parameters has data {}, no unique name, revision "0"', async () => {
  await ready();
  const d = await svc().documents.create();
  assertDocument(d, { uniqueName: null, data: {} });
  assert.equal(d.revision, '0');
  assert.equal(d.dateExpires, null);
  const f = await svc().documents(d.sid).fetch();
  assert.deepEqual(f.toJSON(), d.toJSON());
  await d.remove();
});

test('unique names with spaces, non-ASCII and punctuation work as path segments', async () => {
  await ready();
  // ('?', '#' and '%' are not escaped by twilio-node's path building, so they cannot be used.)
  for (const name of ['my doc é', 'naïve 文档 😀', 'a+b=c&d', "o'brien \"quoted\"", 'x:y;z,@!$()*']) {
    const d = await svc().documents.create({ uniqueName: name, data: { name } });
    assert.equal(d.uniqueName, name);
    const f = await svc().documents(name).fetch();
    assert.equal(f.sid, d.sid, `fetch by unique name ${JSON.stringify(name)}`);
    assert.equal(f.uniqueName, name);
    const u = await svc().documents(name).update({ data: { name, v: 2 } });
    assert.deepEqual(u.data, { name, v: 2 });
    const p = await svc().documents(name).documentPermissions('x').update({ read: true, write: true, manage: false });
    assert.equal(p.documentSid, d.sid);
    assert.equal(await svc().documents(name).remove(), true);
    await expectRestError(svc().documents(d.sid).fetch(), 404, 20404, `removed ${name}`);
  }
});

test('conditional update: ifMatch current revision succeeds, stale revision is 412 / 54103 and changes nothing', async () => {
  await ready();
  const d = await svc().documents.create({ uniqueName: uniq('cond'), data: { v: 0 } });
  const r1 = await svc().documents(d.sid).update({ data: { v: 1 }, ifMatch: d.revision });
  assert.deepEqual(r1.data, { v: 1 });
  assert.notEqual(r1.revision, d.revision);
  const err = await expectRestError(
    svc().documents(d.sid).update({ data: { v: 'stale' }, ifMatch: d.revision }), 412, 54103, 'stale ifMatch',
  );
  assert.match(err.message, /revision/i);
  const cur = await svc().documents(d.sid).fetch();
  assert.deepEqual(cur.data, { v: 1 }, 'a rejected conditional update leaves the data');
  assert.equal(cur.revision, r1.revision, 'and the revision');
  // A revision the document has not reached yet is stale too.
  await expectRestError(svc().documents(d.sid).update({ data: { v: 'future' }, ifMatch: 'ff' }), 412, 54103, 'future ifMatch');
  // The ETag of the last response works as ifMatch (what Twilio's docs tell REST users).
  const withEtag = await svc().documents(d.sid).fetchWithHttpInfo();
  const r2 = await svc().documents(d.sid).update({ data: { v: 2 }, ifMatch: withEtag.headers.etag });
  assert.deepEqual(r2.data, { v: 2 });
  // A quoted ETag (RFC 7232 entity-tag syntax) is accepted as well.
  const r2q = await svc().documents(d.sid).update({ data: { v: 2, quoted: true }, ifMatch: `"${r2.revision}"` });
  assert.deepEqual(r2q.data, { v: 2, quoted: true });
  await expectRestError(svc().documents(d.sid).update({ data: {}, ifMatch: `"${r2.revision}"` }), 412, 54103, 'stale quoted ifMatch');
  // TTL-only conditional update.
  const r3 = await svc().documents(d.sid).update({ ttl: 3600, ifMatch: r2q.revision });
  assert.deepEqual(r3.data, { v: 2, quoted: true });
  await d.remove();
});

test('data round-trips exactly: HTML characters, unicode, null, numbers, nesting', async () => {
  await ready();
  const data = {
    html: '<b class="x">&amp;</b>',
    unicode: 'é 文 😀 \u2028 \u0000',
    nul: null,
    t: true,
    f: false,
    num: -12.5e-3,
    int: 9007199254740991,
    empty: { arr: [], obj: {} },
    deep: { a: { b: { c: { d: [1, [2, [3, { e: 'end' }]]] } } } },
  };
  const d = await svc().documents.create({ data });
  assert.deepEqual(d.data, data);
  assert.deepEqual((await svc().documents(d.sid).fetch()).data, data);
  const l = await svc().syncLists.create();
  assert.deepEqual((await svc().syncLists(l.sid).syncListItems.create({ data })).data, data);
  assert.deepEqual((await svc().syncLists(l.sid).syncListItems(0).fetch()).data, data);
  await l.remove();
  await d.remove();
});

test('default page size is 50: page() without pageSize on 52 documents', async () => {
  await ready();
  const s = await srv.restClient().sync.v1.services.create({ friendlyName: 'default page size' });
  const ps = srv.restClient().sync.v1.services(s.sid);
  const sids = [];
  for (let i = 0; i < 52; i++) sids.push((await ps.documents.create()).sid);
  const p1 = await ps.documents.page();
  assert.equal(p1.instances.length, 50);
  assert.equal(p1._payload.meta.page_size, 50);
  const p2 = await p1.nextPage();
  assert.deepEqual(p2.instances.map((d) => d.sid), sids.slice(50));
  assert.deepEqual((await ps.documents.list()).map((d) => d.sid), sids);
  await ps.remove();
});

test('revisions increase with every update', async () => {
  await ready();
  const d = await svc().documents.create({ data: { i: 0 } });
  const seen = [d.revision];
  for (let i = 1; i <= 20; i++) seen.push((await svc().documents(d.sid).update({ data: { i } })).revision);
  assert.equal(new Set(seen).size, seen.length, `all revisions distinct: ${seen}`);
  // Revisions are lower-case hex counters as Twilio's ("0" ... "1e").
  for (const r of seen) assert.match(r, /^[0-9a-f]+$/);
  const nums = seen.map((r) => parseInt(r, 16));
  for (let i = 1; i < nums.length; i++) assert.ok(nums[i] > nums[i - 1], `revision ${seen[i]} > ${seen[i - 1]}`);
  await d.remove();
});

test('ttl: create with ttl sets dateExpires; update ttl re-arms; ttl 0 clears; data-only update keeps it', async () => {
  await ready();
  let t0 = Date.now();
  const d = await svc().documents.create({ uniqueName: uniq('ttl'), data: { a: 1 }, ttl: 3600 });
  let t1 = Date.now();
  assertExpires(d.dateExpires, 3600, t0, t1, 'create ttl 3600');

  t0 = Date.now();
  const u = await svc().documents(d.sid).update({ ttl: 7200 });
  t1 = Date.now();
  assertExpires(u.dateExpires, 7200, t0, t1, 'update ttl 7200');
  assert.deepEqual(u.data, { a: 1 }, 'ttl-only update keeps data');

  const dataOnly = await svc().documents(d.sid).update({ data: { a: 2 } });
  assert.equal(dataOnly.dateExpires.getTime(), u.dateExpires.getTime(), 'data-only update keeps dateExpires');

  const cleared = await svc().documents(d.sid).update({ ttl: 0 });
  assert.equal(cleared.dateExpires, null, 'ttl 0 means never expires');
  assert.equal((await svc().documents(d.sid).fetch()).dateExpires, null);

  const maxTtl = await svc().documents.create({ data: {}, ttl: 31536000 });
  assert.ok(maxTtl.dateExpires instanceof Date, 'ttl 31536000 (one year) is accepted');
  await maxTtl.remove();
  await d.remove();
});

test('a document whose ttl elapsed is gone', async () => {
  await ready();
  const name = uniq('expiring');
  const d = await svc().documents.create({ uniqueName: name, data: { bye: true }, ttl: 1 });
  assert.ok(d.dateExpires instanceof Date);
  // date_expires has whole seconds; wait until it is well in the past.
  const wait = d.dateExpires.getTime() + 1100 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  await expectRestError(svc().documents(d.sid).fetch(), 404, 20404, 'expired document');
  const listed = await svc().documents.list();
  assert.ok(!listed.some((x) => x.sid === d.sid), 'expired document is not listed');
  // Its unique name can be reused.
  const again = await svc().documents.create({ uniqueName: name });
  await again.remove();
});

test('documents paging: 7 documents, pageSize 3 — list / each / page + nextPage', async () => {
  await ready();
  const s = await srv.restClient().sync.v1.services.create({ friendlyName: 'paging' });
  const ps = srv.restClient().sync.v1.services(s.sid);
  const made = [];
  for (let i = 0; i < 7; i++) made.push(await ps.documents.create({ uniqueName: `page-${i}`, data: { i } }));
  const sids = made.map((d) => d.sid);

  const all = await ps.documents.list({ pageSize: 3 });
  assert.deepEqual(all.map((d) => d.sid), sids, 'list({pageSize: 3}) returns all 7 in creation order');
  assert.deepEqual(all.map((d) => d.data), made.map((_, i) => ({ i })));
  for (const d of all) {
    assert.equal(d.serviceSid, s.sid);
    assert.equal(d.url, `${srv.baseUrl}/v1/Services/${s.sid}/Documents/${d.sid}`);
    assert.equal(d.createdBy, 'system');
  }
  assert.deepEqual((await ps.documents.list()).map((d) => d.sid), sids, 'default page size returns all 7');
  assert.deepEqual((await ps.documents.list({ limit: 5, pageSize: 3 })).map((d) => d.sid), sids.slice(0, 5));
  assert.deepEqual((await ps.documents.list({ limit: 4 })).map((d) => d.sid), sids.slice(0, 4));

  const eachSeen = [];
  await ps.documents.each({ pageSize: 3 }, (d) => eachSeen.push(d.uniqueName));
  assert.deepEqual(eachSeen, made.map((d) => d.uniqueName));
  const limited = [];
  await ps.documents.each({ pageSize: 2, limit: 3, callback: (d) => limited.push(d.sid) });
  assert.deepEqual(limited, sids.slice(0, 3));

  const p1 = await ps.documents.page({ pageSize: 3 });
  assert.deepEqual(p1.instances.map((d) => d.sid), sids.slice(0, 3));
  assert.equal(p1.previousPageUrl, undefined);
  const collUrl = `${srv.baseUrl}/v1/Services/${s.sid}/Documents`;
  assert.ok(p1.nextPageUrl && p1.nextPageUrl.startsWith(collUrl + '?'), `absolute next_page_url: ${p1.nextPageUrl}`);
  assert.match(p1.nextPageUrl, /[?&]PageSize=3(&|$)/);
  const p2 = await p1.nextPage();
  assert.deepEqual(p2.instances.map((d) => d.sid), sids.slice(3, 6));
  const p3 = await p2.nextPage();
  assert.deepEqual(p3.instances.map((d) => d.sid), sids.slice(6));
  assert.equal(p3.nextPageUrl, undefined, 'last page has no next_page_url');
  assert.equal(p3.nextPage(), undefined);

  // Removing one shifts the listing; nothing is duplicated or lost.
  await ps.documents('page-1').remove();
  assert.deepEqual((await ps.documents.list({ pageSize: 3 })).map((d) => d.sid), [sids[0], ...sids.slice(2)]);

  await ps.remove();
});

test('documents page.previousPage() walks back over 7 documents with pageSize 3', async () => {
  await ready();
  const s = await srv.restClient().sync.v1.services.create({ friendlyName: 'previous page' });
  const ps = srv.restClient().sync.v1.services(s.sid);
  const sids = [];
  for (let i = 0; i < 7; i++) sids.push((await ps.documents.create({ data: { i } })).sid);
  const q1 = await ps.documents.page({ pageSize: 3 });
  const q2 = await q1.nextPage();
  const q3 = await q2.nextPage();
  assert.deepEqual(q3.instances.map((d) => d.sid), sids.slice(6));
  assert.ok(q2.previousPageUrl, `the second page has a previous_page_url (meta ${JSON.stringify(q2._payload.meta)})`);
  assert.ok(q3.previousPageUrl, 'the third page has a previous_page_url');
  assert.ok(q3.previousPageUrl.startsWith(`${srv.baseUrl}/v1/Services/${s.sid}/Documents?`), q3.previousPageUrl);
  const back = await q3.previousPage();
  assert.deepEqual(back.instances.map((d) => d.sid), sids.slice(3, 6), 'previousPage() of page 3 is page 2');
  const front = await back.previousPage();
  assert.deepEqual(front.instances.map((d) => d.sid), sids.slice(0, 3), 'and its previousPage() is page 1');
  assert.equal(front.previousPageUrl, undefined);
  await ps.remove();
});

test('document permissions: update (upsert) / fetch / list / remove, identities with spaces', async () => {
  await ready();
  const name = uniq('perm doc');
  const d = await svc().documents.create({ uniqueName: name, data: {} });
  const perms = svc().documents(d.sid).documentPermissions;
  const identity = 'alice smith';
  const p = await svc().documents(d.sid).documentPermissions(identity).update({ read: true, write: false, manage: false });
  assert.equal(p.accountSid, srv.creds.accountSid);
  assert.equal(p.serviceSid, svcSid);
  assert.equal(p.documentSid, d.sid);
  assert.equal(p.identity, identity);
  assert.deepEqual([p.read, p.write, p.manage], [true, false, false]);
  assert.equal(p.url, `${srv.baseUrl}/v1/Services/${svcSid}/Documents/${d.sid}/Permissions/alice%20smith`);

  const f = await svc().documents(name).documentPermissions(identity).fetch();
  assert.deepEqual(f.toJSON(), p.toJSON(), 'fetch by document unique name returns the same permission');

  // Upsert: a second update overwrites all three flags.
  const p2 = await svc().documents(name).documentPermissions(identity).update({ read: false, write: true, manage: true });
  assert.deepEqual([p2.read, p2.write, p2.manage], [false, true, true]);
  assert.equal(p2.documentSid, d.sid);

  const ids = ['bob', 'carol@example.com', 'dave ünïcode', 'eve/with slash'];
  for (const id of ids) {
    const x = await svc().documents(d.sid).documentPermissions(id.includes('/') ? encodeURIComponent(id) : id)
      .update({ read: true, write: true, manage: false });
    assert.equal(x.identity, id);
  }
  // twilio-node 6.3.1 refuses '/' and '?' in path parameters (utility.isValidPathParam), so such an
  // identity is addressed pre-encoded; the server decodes the path segment once.
  assert.throws(() => svc().documents(d.sid).documentPermissions('eve/with slash'), /Parameter 'identity' is not valid/);
  const slash = await svc().documents(d.sid).documentPermissions(encodeURIComponent('eve/with slash')).fetch();
  assert.equal(slash.identity, 'eve/with slash');
  assert.equal(slash.url, `${srv.baseUrl}/v1/Services/${svcSid}/Documents/${d.sid}/Permissions/eve%2Fwith%20slash`);

  const listed = await perms.list({ pageSize: 2 });
  assert.deepEqual(listed.map((x) => x.identity).sort(), [identity, ...ids].sort(), 'list({pageSize: 2}) returns every identity');
  for (const x of listed) {
    assert.equal(x.documentSid, d.sid);
    assert.equal(typeof x.read, 'boolean');
  }
  const eachIds = [];
  await perms.each({ pageSize: 3 }, (x) => eachIds.push(x.identity));
  assert.deepEqual(eachIds.sort(), [identity, ...ids].sort());
  const pg = await perms.page({ pageSize: 2 });
  assert.equal(pg.instances.length, 2);
  assert.ok(pg.nextPageUrl.startsWith(`${srv.baseUrl}/v1/Services/${svcSid}/Documents/${d.sid}/Permissions?`), pg.nextPageUrl);

  assert.equal(await svc().documents(d.sid).documentPermissions(identity).remove(), true);
  await expectRestError(svc().documents(d.sid).documentPermissions(identity).fetch(), 404, 20404, 'removed permission');
  await expectRestError(svc().documents(d.sid).documentPermissions('nobody').fetch(), 404, 20404, 'never-set permission');
  assert.equal((await perms.list()).length, ids.length);

  // Permissions of a missing document.
  await expectRestError(svc().documents('ET' + '0'.repeat(32)).documentPermissions.list(), 404, 20404, 'permissions of unknown document');
  await expectRestError(
    svc().documents('no such doc').documentPermissions('bob').update({ read: true, write: true, manage: true }),
    404, 20404, 'set permission on unknown document',
  );
  // Removing the document removes its permissions.
  await d.remove();
  const d2 = await svc().documents.create({ uniqueName: name });
  assert.deepEqual(await svc().documents(d2.sid).documentPermissions.list(), [], 'a new document with the same name has no permissions');
  await d2.remove();
});

test('documents.list on an empty service is an empty array; the page meta is well-formed', async () => {
  await ready();
  const s = await srv.restClient().sync.v1.services.create();
  const ps = srv.restClient().sync.v1.services(s.sid);
  assert.deepEqual(await ps.documents.list(), []);
  const pg = await ps.documents.page({ pageSize: 5 });
  assert.deepEqual(pg.instances, []);
  assert.equal(pg.nextPageUrl, undefined);
  assert.equal(pg.previousPageUrl, undefined);
  assert.equal(pg._payload.meta.key, 'documents');
  assert.equal(pg._payload.meta.page_size, 5);
  assert.equal(pg._payload.meta.page, 0);
  assert.equal(pg._payload.meta.url, `${srv.baseUrl}/v1/Services/${s.sid}/Documents?PageSize=5&Page=0`);
  assert.equal(pg._payload.meta.first_page_url, `${srv.baseUrl}/v1/Services/${s.sid}/Documents?PageSize=5&Page=0`);
  await ps.remove();
});
