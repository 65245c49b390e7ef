/**
 * The key-ring file formats (issue 20) as pure functions: `jwks` publishes
 * public members only and refuses a ring of symmetric keys; `pem-bundle`
 * concatenates a ring of certificates and refuses a private key; both list
 * current first and a key kept across versions once; a ring format takes no
 * template.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { importJWK, type JWK } from 'jose';
import { parseFileSpecs } from '../src/agent/files/file-spec-schema.ts';
import { renderFile } from '../src/agent/files/formats.ts';
import type { ItemValue } from '../src/agent/files/item-value.ts';
import { FileRenderError } from '../src/agent/files/render-error.ts';

const config = (value: unknown, version: number): ItemValue => ({ kind: 'config', value: Buffer.from(JSON.stringify(value)), version });
const secret = (value: string, version: number): ItemValue => ({ kind: 'secret', value: Buffer.from(value), version });

function rsaJwk(kid: string): JWK {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...(privateKey.export({ format: 'jwk' }) as JWK), kid };
}

const spec = (format: string, items = ['production/auth/keys']) => parseFileSpecs([{ path: 'out', format, items }])[0]!;

test('jwks: the current key and the previous ones, public members only, importable by jose', async () => {
  const k2 = rsaJwk('k2');
  const k1 = rsaJwk('k1');
  const item: ItemValue = { ...config(k2, 2), previous: [config({ keys: [k1, { kty: 'oct', k: 'c2VjcmV0', kid: 'h' }] }, 1)] };
  const out = JSON.parse(renderFile(spec('jwks'), new Map([['keys', item]])).toString()) as { keys: JWK[] };
  assert.deepEqual(out.keys.map((k) => k.kid), ['k2', 'k1'], 'current first; the symmetric key is left out');
  for (const key of out.keys) {
    assert.deepEqual(Object.keys(key).filter((m) => ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'].includes(m)), []);
    assert.equal(((await importJWK(key, 'RS256')) as { type: string }).type, 'public');
  }
  const same: ItemValue = { ...config(k2, 3), previous: [config(k2, 2)] };
  assert.equal((JSON.parse(renderFile(spec('jwks'), new Map([['keys', same]])).toString()) as { keys: JWK[] }).keys.length, 1, 'a key kept across versions is listed once');
});

test('jwks refuses a ring of symmetric keys and a value that is not a JWK, naming the item, never the value', () => {
  const hmac: ItemValue = { ...secret(JSON.stringify({ kty: 'oct', k: 'c2VjcmV0' }), 2), previous: [secret(JSON.stringify({ kty: 'oct', k: 'b2xk' }), 1)] };
  assert.throws(() => renderFile(spec('jwks'), new Map([['keys', hmac]])), (err: unknown) => err instanceof FileRenderError && /only symmetric keys/.test(err.message) && !err.message.includes('c2VjcmV0'));
  assert.throws(() => renderFile(spec('jwks'), new Map([['keys', config({ alg: 'ES256' }, 1)]])), /production\/auth\/keys version 1 is not a JSON Web Key \(no "kty"\)/);
});

test('pem-bundle concatenates the ring of certificates, current first, and refuses a private key', () => {
  // The format checks PEM framing, not X.509 contents: distinct base64 bodies stand in for two certificates.
  const cert = (seed: number): string => `-----BEGIN CERTIFICATE-----\n${Buffer.alloc(48, seed).toString('base64')}\n-----END CERTIFICATE-----\n`;
  const [a, b] = [cert(1), cert(2)];
  const out = renderFile(spec('pem-bundle'), new Map([['keys', { ...secret(b, 2), previous: [secret(a, 1)] }]])).toString();
  assert.equal(out, `${b.trim()}\n${a.trim()}\n`);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const key = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  assert.throws(() => renderFile(spec('pem-bundle'), new Map([['keys', { ...secret(b, 2), previous: [secret(key, 1)] }]])), /version 1 holds a private key/);
  assert.throws(() => renderFile(spec('pem-bundle'), new Map([['keys', secret('not pem', 2)]])), /is not PEM text/);
});

test('a ring format takes no template', () => {
  assert.throws(() => parseFileSpecs([{ path: 'out', format: 'jwks', items: ['production/auth/keys'], template: '{{keys}}' }]), /format jwks renders key rings and takes no template/);
});
