'use strict';
// Helpers shared by the REST v1 suites.
const assert = require('node:assert/strict');
const { twilio } = require('../lib/harness');

const { RestException } = twilio;

const sidRe = (prefix) => new RegExp(`^${prefix}[0-9a-f]{32}$`);
let seq = 0;
const uniq = (p) => `${p}-${process.pid}-${++seq}`;

async function expectRestError(promise, status, code, what = '') {
  const err = await promise.then(
    (v) => assert.fail(`${what}: expected RestException ${status}/${code}, got success ${JSON.stringify(v && v.toJSON ? v.toJSON() : v)}`),
    (e) => e,
  );
  assert.ok(err instanceof RestException, `${what}: expected a RestException, got ${err && err.stack}`);
  assert.equal(err.status, status, `${what}: status (message ${JSON.stringify(err.message)}, code ${err.code})`);
  assert.equal(err.code, code, `${what}: code (message ${JSON.stringify(err.message)})`);
  assert.equal(err.moreInfo, `https://www.twilio.com/docs/errors/${code}`, `${what}: moreInfo`);
  assert.ok(typeof err.message === 'string' && err.message.length > 0, `${what}: message`);
  return err;
}

function assertExpires(dateExpires, ttl, t0, t1, what) {
  assert.ok(dateExpires instanceof Date, `${what}: dateExpires is a Date, got ${dateExpires}`);
  const ms = dateExpires.getTime();
  assert.equal(ms % 1000, 0, `${what}: whole seconds`);
  assert.ok(ms >= Math.floor(t0 / 1000) * 1000 + ttl * 1000 && ms <= t1 + ttl * 1000,
    `${what}: dateExpires ${dateExpires.toISOString()} = request time + ${ttl}s (request between ${new Date(t0).toISOString()} and ${new Date(t1).toISOString()})`);
}

module.exports = { sidRe, uniq, expectRestError, assertExpires };
