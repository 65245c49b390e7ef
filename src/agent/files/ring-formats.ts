/**
 * The key-ring formats (issue 20), for files and for `?ring=1&format=` reads:
 * `jwks` renders the rings of JWK items as one JSON Web Key Set (RFC 7517)
 * with public members only, and `pem-bundle` concatenates the rings of
 * certificate items. A ring is listed current first, then its previous
 * versions newest first, so verifiers hold every key a signer may still use.
 */
import type { ItemValue } from './item-value.ts';
import { isPem } from './pem.ts';
import { FileRenderError } from './render-error.ts';

/** The ring-reading formats. */
export const RING_FORMATS = ['jwks', 'pem-bundle'] as const;
export type RingFormat = (typeof RING_FORMATS)[number];

export function isRingFormat(format: string): format is RingFormat {
  return (RING_FORMATS as readonly string[]).includes(format);
}

/** One item's ring as the formats read it: the current value, then the previous ones. */
export interface RingValues {
  readonly label: string;
  readonly current: ItemValue;
  readonly previous: readonly ItemValue[];
}

/**
 * Members that make a JWK private (RFC 7518 §6.2.2, §6.3.2, §6.4.1 and the
 * OKP `d` of RFC 8037): never written to a key set.
 */
const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']);

type JsonObject = { [key: string]: unknown };

const isObject = (value: unknown): value is JsonObject => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The JWKs an item value holds: one JWK, or a key set `{ "keys": [...] }`. */
function jwksOf(label: string, version: number, item: ItemValue): JsonObject[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(item.value.toString('utf8'));
  } catch {
    throw new FileRenderError('unrepresentable', `${label} version ${version} is not a JSON Web Key (not JSON)`);
  }
  const keys = isObject(parsed) && Array.isArray(parsed.keys) ? (parsed.keys as unknown[]) : [parsed];
  return keys.map((key) => {
    if (!isObject(key) || typeof key.kty !== 'string') throw new FileRenderError('unrepresentable', `${label} version ${version} is not a JSON Web Key (no "kty")`);
    return key;
  });
}

/** The public form of a JWK, or undefined for a symmetric key (nothing public to publish). */
function publicJwk(key: JsonObject): JsonObject | undefined {
  if (key.kty === 'oct') return undefined;
  const out: JsonObject = {};
  for (const [name, value] of Object.entries(key)) if (!PRIVATE_MEMBERS.has(name)) out[name] = value;
  return out;
}

export function renderJwks(rings: readonly RingValues[]): Buffer {
  const keys: JsonObject[] = [];
  const seen = new Set<string>();
  let symmetric = 0;
  for (const ring of rings) {
    for (const item of [ring.current, ...ring.previous]) {
      for (const key of jwksOf(ring.label, item.version, item)) {
        const pub = publicJwk(key);
        if (!pub) {
          symmetric += 1;
          continue;
        }
        // A key kept across versions (a ring that re-lists it) is published once.
        const id = JSON.stringify(pub);
        if (seen.has(id)) continue;
        seen.add(id);
        keys.push(pub);
      }
    }
  }
  if (keys.length === 0) {
    throw new FileRenderError(
      'unrepresentable',
      symmetric > 0 ? `${rings.map((r) => r.label).join(', ')} holds only symmetric keys (kty "oct"), which a key set cannot publish; use format json` : 'the rings hold no keys',
    );
  }
  return Buffer.from(`${JSON.stringify({ keys }, null, 2)}\n`);
}

const PRIVATE_PEM_RE = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;

export function renderPemBundle(rings: readonly RingValues[]): Buffer {
  const parts: string[] = [];
  const seen = new Set<string>();
  for (const ring of rings) {
    for (const item of [ring.current, ...ring.previous]) {
      const text = item.value.toString('utf8');
      if (!isPem(text)) throw new FileRenderError('not_pem', `${ring.label} version ${item.version} is not PEM text (-----BEGIN ...----- blocks)`);
      if (PRIVATE_PEM_RE.test(text)) throw new FileRenderError('unrepresentable', `${ring.label} version ${item.version} holds a private key; a pem-bundle publishes certificates only`);
      const trimmed = text.trim();
      if (seen.has(trimmed)) continue;
      seen.add(trimmed);
      parts.push(trimmed);
    }
  }
  return Buffer.from(`${parts.join('\n')}\n`);
}

export function renderRing(format: RingFormat, rings: readonly RingValues[]): Buffer {
  return format === 'jwks' ? renderJwks(rings) : renderPemBundle(rings);
}
