/**
 * The REST wire contract between the control plane, the agent and the CLI.
 * Schemas validate every body at the edge; the inferred types are what the
 * rest of the code trusts. The agent's process never loads this module's
 * values (zod): it takes constants from protocol-constants.ts and checks its
 * two upstream responses by hand (envelope-wire.ts); types are free to import.
 *
 * Conventions
 * - Revisions and versions are JSON numbers (they stay below 2^53).
 * - Item versions are numbered per item (namespace/name), across environments:
 *   every write to any environment's layer of the item takes the next number.
 * - `env` selects a layer chain: reading `prod` deep-merges `base → dev →
 *   staging → prod` for `config`; a `secret` is never merged: the most specific
 *   layer that exists wins.
 * - `etag` is a quoted string that changes whenever the served value does; for a
 *   merged config it covers every contributing layer's version.
 */
import { z } from 'zod';
import { CHANGE_SET_MAX_CHANGES, ITEM_KINDS } from './protocol-constants.ts';

export {
  BASE_ENV,
  CHANGE_SET_MAX_CHANGES,
  DEFAULT_ENV,
  DEFAULT_ENVIRONMENTS,
  HEADERS,
  ITEM_KINDS,
  ROLLOUT_ACTIONS,
  SSE_EVENT_TYPES,
  type ItemKind,
  type RolloutAction,
  type SseEventType,
} from './protocol-constants.ts';
export type { DeksResponse, EnvelopeLayer, EnvelopeResponse, ErrorBody } from './envelope-wire.ts';

/**
 * Key-ring write options (issue 20; parsed by shared/ring-proto.ts): how long
 * a version that stops being current stays readable (`24h`, `0s` = off,
 * absent = keep the item's setting), and ending every previous version's grace.
 */
const ringWrite = { ringGrace: z.string().min(1).max(32).optional(), revokePrevious: z.boolean().optional() };

// --- PUT /v1/items/{namespace...}/{name}?env=ENV ---------------------------
export const putItemBody = z.union([
  z.object({ kind: z.literal('config'), value: z.json(), ...ringWrite }).strict(),
  z.object({ kind: z.literal('secret'), value: z.string(), ...ringWrite }).strict(),
  z.object({ kind: z.literal('secret'), valueBase64: z.base64(), ...ringWrite }).strict(),
]);
export type PutItemBody = z.infer<typeof putItemBody>;

export const putItemResponse = z.object({
  version: z.number().int(),
  revision: z.number().int(),
  /** PUT: the more specific environments holding a live layer of the item, which readers there see over the written one. */
  overriddenBy: z.array(z.string()).optional(),
});
export type PutItemResponse = z.infer<typeof putItemResponse>;

// --- POST /v1/changes: an atomic change set ---------------------------------
const changeTarget = { item: z.string().min(1).max(600), env: z.string().min(1).max(63).optional() };
/** One member of a set: a put (the PUT body plus the item path) or a delete. */
export const changeEntry = z.union([
  z.object({ ...changeTarget, kind: z.literal('config'), value: z.json(), ...ringWrite }).strict(),
  z.object({ ...changeTarget, kind: z.literal('secret'), value: z.string(), ...ringWrite }).strict(),
  z.object({ ...changeTarget, kind: z.literal('secret'), valueBase64: z.base64(), ...ringWrite }).strict(),
  z.object({ ...changeTarget, delete: z.literal(true) }).strict(),
]);
export type ChangeEntry = z.infer<typeof changeEntry>;

export const changeSetBody = z.object({ changes: z.array(changeEntry).min(1) }).strict();
export type ChangeSetBody = z.infer<typeof changeSetBody>;

/**
 * `revision` is the set's last revision: on the watch stream the members are
 * consecutive revisions, each carrying it as `set_revision`.
 */
export const changeSetResponse = z.object({
  revision: z.number().int(),
  items: z.array(z.object({ item: z.string(), version: z.number().int() })),
});
export type ChangeSetResponse = z.infer<typeof changeSetResponse>;

// --- /v1/rollouts: staged rollouts of a change set (issue 17) --------------
/** Percent steps are increasing, each 1..100, the last 100. */
export const rolloutStartBody = z.object({
  changes: z.array(changeEntry).min(1).max(CHANGE_SET_MAX_CHANGES),
  steps: z.array(z.number().int().min(1).max(100)).min(1).max(10),
  bakeSeconds: z.number().int().min(0).max(7 * 24 * 3600),
  maxUnhealthy: z.number().int().min(0).max(10_000),
}).strict();
export type RolloutStartBody = z.infer<typeof rolloutStartBody>;

export const ROLLOUT_STATES = ['rolling', 'paused', 'completed', 'rolled_back', 'aborted'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** GET /v1/rollouts/{id}; POST /v1/rollouts answers the same view (at least id and state). */
export interface RolloutView {
  readonly id: string;
  readonly state: RolloutState;
  /** Index into steps of the current (or last) step. */
  readonly step: number;
  readonly steps: readonly number[];
  readonly percent: number;
  /** The items the rollout changes (namespace/name), for display and one-active-rollout-per-item. */
  readonly items: readonly string[];
  readonly canary: readonly string[];
  readonly unhealthy: ReadonlyArray<{ readonly agent: string; readonly reason: string }>;
  readonly bakeSeconds: number;
  readonly maxUnhealthy: number;
  readonly createdAt: string;
  /** When the current step started (ISO time). */
  readonly stepStartedAt: string;
  /** Why it ended, for rolled_back / aborted. */
  readonly reason?: string;
  /** While active: how far each canary got with the candidate (from its last report). */
  readonly canaryStatus?: readonly CanaryStatus[];
}

/**
 * One canary's health levels: reporting (and when it last did), connected
 * (false too when it is `silent`: no report for three report intervals,
 * whatever it last said), the candidate applied (its applied revision reached the rollout's), its files published at that
 * revision (`none`: it renders no files), and the application's own signal
 * observed since (`unknown` until then). The rollout counts it as applied
 * when `applied` and `files` is not `pending`.
 */
export interface CanaryStatus {
  readonly agent: string;
  readonly reporting: boolean;
  /** When its last report reached the server (ISO 8601); absent when not reporting. */
  readonly lastReport?: string;
  readonly silent?: true;
  readonly connected: boolean;
  readonly applied: boolean;
  readonly files: 'none' | 'pending' | 'published';
  readonly appHealth: 'unknown' | 'healthy' | 'unhealthy';
}

/** A rollout id as the server makes them (`ro-` and 12 hex digits); paths accept this shape only. */
export const ROLLOUT_ID_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** GET /v1/rollouts */
export interface RolloutsResponse {
  readonly rollouts: readonly RolloutView[];
}

// --- GET /v1/items/{namespace...}/{name}?env=ENV ---------------------------
/**
 * `value` is the JSON value for `config`; for `secret` it is the UTF-8 text, or
 * base64 with `encoding: "base64"` when the bytes are not valid UTF-8.
 */
export const itemResponse = z.object({
  namespace: z.string(),
  name: z.string(),
  kind: z.enum(ITEM_KINDS),
  env: z.string(),
  version: z.number().int(),
  revision: z.number().int(),
  etag: z.string(),
  value: z.json(),
  encoding: z.enum(['utf8', 'base64']).optional(),
});
export type ItemResponse = z.infer<typeof itemResponse>;

// --- GET /v1/list/{prefix...} ----------------------------------------------
export const listResponse = z.object({
  items: z.array(
    z.object({
      namespace: z.string(),
      name: z.string(),
      kind: z.enum(ITEM_KINDS),
      version: z.number().int(),
      revision: z.number().int(),
      envs: z.array(z.string()),
    }),
  ),
  /** Present when more items follow: pass it as ?cursor= for the next page. */
  nextCursor: z.string().optional(),
});
export type ListResponse = z.infer<typeof listResponse>;

// --- GET /v1/history/{namespace...}/{name} ---------------------------------
export const historyResponse = z.object({
  namespace: z.string(),
  name: z.string(),
  kind: z.enum(ITEM_KINDS),
  versions: z.array(
    z.object({
      version: z.number().int(),
      env: z.string(),
      revision: z.number().int(),
      createdAt: z.string(),
      createdBy: z.string(),
      /** true for a tombstone written by DELETE of that layer */
      deleted: z.boolean(),
    }),
  ),
});
export type HistoryResponse = z.infer<typeof historyResponse>;

// --- POST /v1/rollback/{namespace...}/{name} { version } --------------------
export const rollbackBody = z.object({ version: z.number().int().positive() }).strict();
export type RollbackBody = z.infer<typeof rollbackBody>;

// --- POST /v1/rotate/{namespace...} -----------------------------------------
export const rotateResponse = z.object({
  namespace: z.string(),
  keyVersion: z.number().int(),
  revision: z.number().int(),
  /** `?retire-previous=true`: the key versions destroyed (issue 20). */
  retiredVersions: z.array(z.number().int()).optional(),
  /** `?retire-previous=true`: rows re-sealed under the new key, history included. */
  resealed: z.number().int().optional(),
});
export type RotateResponse = z.infer<typeof rotateResponse>;

// --- GET /v1/envelopes/{namespace...}/{name}?env=ENV (agent-facing) ----------
// The envelope and DEK responses are checked by hand (envelope-wire.ts): the agent reads them without zod.

// --- POST /v1/deks/{namespace...} { publicKey } (agent-facing) ---------------
export const deksRequest = z.object({ publicKey: z.string().min(1) }).strict();
export type DeksRequest = z.infer<typeof deksRequest>;

// --- GET /v1/keys: data-key ages (metadata only, never key material) ------
/** One namespace's current data key, as the status page and `rotate` planning see it. */
export interface KeyAgeView {
  readonly namespace: string;
  readonly version: number;
  readonly createdAt: string;
  readonly ageSeconds: number;
  /** When the age policy (--key-max-age) rotates it. */
  readonly rotationDueAt: string;
}

/** GET /v1/keys: the namespaces the caller may `list`, in name order. */
export interface KeysResponse {
  readonly keys: readonly KeyAgeView[];
}

// --- agent SSE (`GET /v1/watch?prefix=`) -------------------------------------
/** `data:` of an SSE event; never carries a value. */
export const sseEventData = z.object({
  namespace: z.string(),
  name: z.string().optional(),
  version: z.number().int().optional(),
  revision: z.number().int(),
  /** A member of a change set: the set's last revision (also the event's SSE id). */
  setRevision: z.number().int().optional(),
  /** On the last member of a set this agent applied: the set is complete. */
  endsSet: z.literal(true).optional(),
});
export type SseEventData = z.infer<typeof sseEventData>;

// --- GET /v1/items/{ns...}/{name}?ring=1 (server and agent) -----------------
const ringValue = {
  version: z.number().int(),
  value: z.json(),
  /** Secret bytes that are not UTF-8 text come as base64. */
  encoding: z.enum(['utf8', 'base64']).optional(),
};

export const ringResponse = z.object({
  namespace: z.string(),
  name: z.string(),
  kind: z.enum(ITEM_KINDS),
  env: z.string(),
  revision: z.number().int(),
  current: z.object(ringValue),
  /** Newest first; each stopped being current at `retiredAt` and leaves the ring at `expiresAt`. */
  previous: z.array(z.object({ ...ringValue, retiredAt: z.string(), expiresAt: z.string() })),
  etag: z.string(),
});
export type RingResponse = z.infer<typeof ringResponse>;
