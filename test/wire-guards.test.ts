/**
 * The hand-written guards the agent checks JSON with instead of zod
 * (src/shared/shape-check.ts, envelope-wire.ts, ring-proto.ts, the health
 * body in src/agent/app-health.ts): bad input is refused with the place it
 * went wrong, good input comes back with only the known keys.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkDeksResponse, checkEnvelopeResponse, checkErrorBody } from '../src/shared/envelope-wire.ts';
import { checkRingEnvelopeResponse } from '../src/shared/ring-proto.ts';
import { parseHealthBody } from '../src/agent/app-health.ts';
import { AppError } from '../src/shared/errors.ts';
import type { Checked } from '../src/shared/shape-check.ts';

const LAYER = { env: 'prod', version: 3, keyId: 'k1', keyVersion: 2, iv: 'aXY=', ciphertext: 'Y3Q=', tag: 'dGFn' };
const ENVELOPE = { namespace: 'team-a/app', name: 'db', kind: 'secret', env: 'prod', version: 3, revision: 9, etag: '"3"', layers: [LAYER] };

function problem<T>(result: Checked<T>): string {
  assert.equal(result.ok, false, 'refused');
  return result.ok ? '' : result.error;
}

test('envelope: a good one comes back with its known keys only; each bad field is named with what came instead', () => {
  const good = checkEnvelopeResponse({ ...ENVELOPE, rollout: 'ro-1', layers: [{ ...LAYER, aadVersion: 2, extra: 'x' }], extra: true });
  assert.ok(good.ok);
  assert.deepEqual(good.value, { ...ENVELOPE, rollout: 'ro-1', layers: [{ ...LAYER, aadVersion: 2 }] });
  assert.equal(problem(checkEnvelopeResponse(null)), 'expected an object, received null');
  assert.equal(problem(checkEnvelopeResponse([])), 'expected an object, received array');
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, kind: 'keyring' })), 'kind: expected one of "config", "secret", received "keyring"');
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, revision: 1.5 })), 'revision: expected an integer, received 1.5');
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, revision: 2 ** 53 })), `revision: expected an integer, received ${2 ** 53}`);
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, layers: [] })), 'layers: expected at least 1 element(s), received 0');
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, layers: [{ ...LAYER, tag: 7 }] })), 'layers.0.tag: expected a string, received number');
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, layers: [{ ...LAYER, aadVersion: 0 }] })), 'layers.0.aadVersion: expected an integer above 0, received 0');
  assert.equal(problem(checkEnvelopeResponse({ ...ENVELOPE, rollout: null })), 'rollout: expected a string, received null');
  const { etag: _etag, ...noEtag } = ENVELOPE;
  assert.equal(problem(checkEnvelopeResponse(noEtag)), 'etag: expected a string, received undefined');
});

test('ring envelope: the envelope plus previous versions, each with at least one layer', () => {
  const previous = [{ version: 2, retiredAt: '2026-11-30T10:00:00Z', expiresAt: '2026-12-01T10:00:00Z', layers: [LAYER] }];
  const good = checkRingEnvelopeResponse({ ...ENVELOPE, previous });
  assert.ok(good.ok);
  assert.deepEqual(good.value, { ...ENVELOPE, previous });
  assert.equal(problem(checkRingEnvelopeResponse(ENVELOPE)), 'previous: expected an array, received undefined');
  assert.equal(problem(checkRingEnvelopeResponse({ ...ENVELOPE, previous: [{ ...previous[0], layers: [] }] })), 'previous.0.layers: expected at least 1 element(s), received 0');
  assert.equal(problem(checkRingEnvelopeResponse({ ...ENVELOPE, layers: 'x', previous })), 'layers: expected an array, received string');
});

test('data keys and error bodies', () => {
  const deks = { namespace: 'team-a', keyId: 'k1', currentVersion: 2, serverPublicKey: 'cGs=', keys: [{ version: 2, iv: 'aXY=', ciphertext: 'Y3Q=', tag: 'dGFn' }] };
  const good = checkDeksResponse(deks);
  assert.ok(good.ok);
  assert.deepEqual(good.value, deks);
  assert.equal(problem(checkDeksResponse({ ...deks, keys: [{ ...deks.keys[0], version: '2' }] })), 'keys.0.version: expected an integer, received string');
  assert.equal(problem(checkDeksResponse({ ...deks, currentVersion: undefined })), 'currentVersion: expected an integer, received undefined');
  assert.deepEqual(checkErrorBody({ error: { code: 'not_found', message: 'gone', detail: 1 } }), { ok: true, value: { error: { code: 'not_found', message: 'gone' } } });
  assert.equal(problem(checkErrorBody({ error: 'gone' })), 'error: expected an object, received string');
  assert.equal(problem(checkErrorBody({ error: { code: 404, message: 'gone' } })), 'error.code: expected a string, received number');
});

test('POST /v1/health body: each refusal is a 400 invalid_argument that says what to send', () => {
  const refusal = (body: string): string => {
    try {
      parseHealthBody(Buffer.from(body));
    } catch (err) {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'invalid_argument');
      assert.match(err.message, /; send \{"healthy": true\|false, "reason"\?: at most 200 printable characters\}\.$/);
      return err.message;
    }
    return assert.fail(`accepted ${body}`);
  };
  assert.match(refusal('[]'), /^The health body is invalid: body: expected an object, received array;/);
  assert.match(refusal('{"healthy":"yes"}'), /: healthy: expected true or false, received string;/);
  assert.match(refusal('{}'), /: healthy: expected true or false, received undefined;/);
  assert.match(refusal('{"healthy":false,"why":"x"}'), /: body: unknown key\(s\) "why";/);
  assert.match(refusal(JSON.stringify({ healthy: false, reason: 'x'.repeat(201) })), /: reason: at most 200 characters, received 201;/);
  assert.match(refusal('{"healthy":false,"reason":"tab\\there"}'), /: reason: printable ASCII only;/);
  assert.match(refusal('{"healthy":false,"reason":7}'), /: reason: expected a string, received number;/);
  assert.deepEqual(parseHealthBody(Buffer.from('{"healthy":false,"reason":"db down"}')), { healthy: false, reason: 'db down' });
});
