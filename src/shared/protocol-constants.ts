/**
 * The plain constants of the REST wire contract (protocol.ts): item kinds,
 * environments, header names, SSE event types, rollout actions and the
 * change-set bound. Apart from protocol.ts's zod schemas so the agent and
 * the CLI's command table can use them without loading zod.
 */

export const ITEM_KINDS = ['config', 'secret'] as const;
export type ItemKind = (typeof ITEM_KINDS)[number];

export const DEFAULT_ENVIRONMENTS = ['base', 'dev', 'staging', 'prod'] as const;
/**
 * The environment read and written when none is named: what the agent serves
 * (`--env`), `get --server` reads and `put` writes, so the three agree. The
 * most specific of DEFAULT_ENVIRONMENTS; CONFIG_SIDECAR_ENV changes it for all.
 */
export const DEFAULT_ENV = 'prod';
export const BASE_ENV = 'base';

/** Header names shared by the agent, its client and the server. */
export const HEADERS = {
  revision: 'x-config-revision',
  stale: 'x-config-stale',
  podToken: 'x-config-sidecar-token',
  /** The agent's id on its reads from the server, so a rollout's canary is answered with the candidate. */
  agentId: 'x-config-sidecar-agent-id',
  retryAfter: 'retry-after',
} as const;

/** Most changes one set may hold; a larger set is a 413 (split it, or raise nothing: the bound is fixed). */
export const CHANGE_SET_MAX_CHANGES = 100;

export const ROLLOUT_ACTIONS = ['promote', 'pause', 'resume', 'abort'] as const;
export type RolloutAction = (typeof ROLLOUT_ACTIONS)[number];

/** Agent SSE (`GET /v1/watch?prefix=`) event types. */
export const SSE_EVENT_TYPES = ['changed', 'deleted', 'rotated', 'resync'] as const;
export type SseEventType = (typeof SSE_EVENT_TYPES)[number];
