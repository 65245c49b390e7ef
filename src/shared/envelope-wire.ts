/**
 * The agent-facing responses of the REST contract (protocol.ts): the sealed
 * envelope of an item (`GET /v1/envelopes/{namespace...}/{name}?env=ENV`),
 * the wrapped data keys (`POST /v1/deks/{namespace...}`) and the error body
 * every non-2xx answer carries. The agent checks each response it reads with
 * these hand-written guards (shape-check.ts) instead of zod, which its
 * process does not load.
 */
import { ITEM_KINDS, type ItemKind } from './protocol-constants.ts';
import { array, checked, field, integer, oneOf, optional, record, string, ShapeError, type Checked } from './shape-check.ts';

/** AES-256-GCM output, each part base64. */
export interface SealedWire {
  iv: string;
  ciphertext: string;
  tag: string;
}

/**
 * One layer of an item's value, opened with the namespace DEK `keyVersion`
 * and AAD `valueAad({namespace, name, version, env, kind, keyId,
 * keyVersion}, aadVersion)`.
 */
export interface EnvelopeLayer extends SealedWire {
  env: string;
  version: number;
  keyId: string;
  keyVersion: number;
  /** The AAD layout (`valueAad`); absent means 1 (a server from before v2). */
  aadVersion?: number | undefined;
}

/**
 * Ciphertext of every layer that contributes to the value for `env`, ordered
 * from the least to the most specific; the agent merges `config` layers
 * itself (secrets: last layer).
 */
export interface EnvelopeResponse {
  namespace: string;
  name: string;
  kind: ItemKind;
  env: string;
  version: number;
  revision: number;
  etag: string;
  layers: EnvelopeLayer[];
  /** Set when this is a staged rollout's candidate (the caller is its canary, or asked with ?rollout=). */
  rollout?: string | undefined;
}

/**
 * Every DEK version of the namespace the caller may use, each wrapped with
 * `wrapDek` for the caller's public key under one fresh server ephemeral key
 * (`serverPublicKey`).
 */
export interface DeksResponse {
  namespace: string;
  keyId: string;
  currentVersion: number;
  serverPublicKey: string;
  keys: Array<SealedWire & { version: number }>;
}

/** `{ "error": { "code", "message" } }`, the body of every error answer. */
export interface ErrorBody {
  error: { code: string; message: string };
}

function sealed(value: Readonly<Record<string, unknown>>, path: string): SealedWire {
  return { iv: field(value, 'iv', path, string), ciphertext: field(value, 'ciphertext', path, string), tag: field(value, 'tag', path, string) };
}

function positiveInteger(value: unknown, path: string): number {
  const n = integer(value, path);
  if (n <= 0) throw new ShapeError(`${path}: expected an integer above 0, received ${n}`);
  return n;
}

/** One layer; shared with the ring envelope (ring-proto.ts). */
export function readEnvelopeLayer(value: unknown, path: string): EnvelopeLayer {
  const o = record(value, path);
  const aadVersion = field(o, 'aadVersion', path, (v, p) => optional(v, p, positiveInteger));
  return {
    ...sealed(o, path),
    env: field(o, 'env', path, string),
    version: field(o, 'version', path, integer),
    keyId: field(o, 'keyId', path, string),
    keyVersion: field(o, 'keyVersion', path, integer),
    ...(aadVersion === undefined ? {} : { aadVersion }),
  };
}

/** The envelope's fields at `path` (the ring envelope adds its own). */
export function readEnvelopeResponse(value: unknown, path = ''): EnvelopeResponse {
  const o = record(value, path);
  const rollout = field(o, 'rollout', path, (v, p) => optional(v, p, string));
  return {
    namespace: field(o, 'namespace', path, string),
    name: field(o, 'name', path, string),
    kind: field(o, 'kind', path, (v, p) => oneOf(v, ITEM_KINDS, p)),
    env: field(o, 'env', path, string),
    version: field(o, 'version', path, integer),
    revision: field(o, 'revision', path, integer),
    etag: field(o, 'etag', path, string),
    layers: field(o, 'layers', path, (v, p) => array(v, p, readEnvelopeLayer, 1)),
    ...(rollout === undefined ? {} : { rollout }),
  };
}

export function checkEnvelopeResponse(value: unknown): Checked<EnvelopeResponse> {
  return checked(() => readEnvelopeResponse(value));
}

export function checkDeksResponse(value: unknown): Checked<DeksResponse> {
  return checked(() => {
    const o = record(value, '');
    return {
      namespace: field(o, 'namespace', '', string),
      keyId: field(o, 'keyId', '', string),
      currentVersion: field(o, 'currentVersion', '', integer),
      serverPublicKey: field(o, 'serverPublicKey', '', string),
      keys: field(o, 'keys', '', (v, p) =>
        array(v, p, (key, at) => {
          const k = record(key, at);
          return { ...sealed(k, at), version: field(k, 'version', at, integer) };
        }),
      ),
    };
  });
}

export function checkErrorBody(value: unknown): Checked<ErrorBody> {
  return checked(() => {
    const error = field(record(value, ''), 'error', '', record);
    return { error: { code: field(error, 'code', 'error', string), message: field(error, 'message', 'error', string) } };
  });
}
