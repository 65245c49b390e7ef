/**
 * REST calls from the agent to the control plane, on undici pools (keep-alive,
 * bounded timeouts). Servers are tried in the order given: a connection
 * failure moves to the next one and the last one that answered is tried first
 * next time. Only idempotent reads are retried, with capped backoff and full
 * jitter; a 429 is retried after its `Retry-After`, within a bounded wait, so
 * a caller waits for its value instead of getting an error while the server
 * is reachable. Every failure becomes an `AppError` whose code comes from the
 * server's body (`error.code`) and is classified by the one error table
 * (`clientActionOf`): `retry` (transient: stale-if-error applies), `drop`
 * (not_found / permission_denied / …: the entry is dropped), or fail as is.
 */
import { checkRingEnvelopeResponse, type RingEnvelopeResponse } from '../shared/ring-proto.ts';
import { readFileSync } from 'node:fs';
import { createPool, type Pool } from '../shared/undici-pool.ts';
import { Backoff } from '../shared/backoff.ts';
import type { Clock } from '../shared/clock.ts';
import { AppError, clientActionOf, isErrorCode, type ErrorCode } from '../shared/errors.ts';
import type { ItemRef } from '../shared/paths.ts';
import { checkDeksResponse, checkEnvelopeResponse, checkErrorBody, type DeksResponse, type EnvelopeResponse } from '../shared/envelope-wire.ts';
import { HEADERS } from '../shared/protocol-constants.ts';
import type { Checked } from '../shared/shape-check.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import type { TokenSource } from './token-source.ts';

export const UPSTREAM_CONNECTIONS = 8;
export const UPSTREAM_CONNECT_TIMEOUT_MS: Milliseconds = 2_000;
export const UPSTREAM_HEADERS_TIMEOUT_MS: Milliseconds = 5_000;
export const UPSTREAM_BODY_TIMEOUT_MS: Milliseconds = 5_000;
export const UPSTREAM_KEEPALIVE_MS: Milliseconds = 30_000;
export const UPSTREAM_MAX_ATTEMPTS = 3;
export const UPSTREAM_RETRY_BASE_MS: Milliseconds = 50;
export const UPSTREAM_RETRY_CAP_MS: Milliseconds = 1_000;
/** A call answered 429 keeps retrying after each Retry-After for at most this long in all. */
export const UPSTREAM_RATE_LIMIT_BUDGET_MS: Milliseconds = 10_000;
/** Retry-After assumed when a 429 carries none (or an unreadable one). */
export const DEFAULT_RETRY_AFTER_MS: Milliseconds = 1_000;
/** Largest upstream body accepted (an envelope with every layer). */
export const UPSTREAM_MAX_BODY_BYTES: Bytes = 16 * 1024 * 1024;

export interface Upstream {
  fetchEnvelope(ref: ItemRef, env: string, signal?: AbortSignal): Promise<EnvelopeResponse>;
  /** The envelope plus the sealed layers of each previous version in the item's key ring. */
  fetchRingEnvelope(ref: ItemRef, env: string, signal?: AbortSignal): Promise<RingEnvelopeResponse>;
  fetchDeks(namespace: string, publicKey: string, signal?: AbortSignal): Promise<DeksResponse>;
  close(): Promise<void>;
}

export interface UpstreamOptions {
  readonly servers: readonly string[];
  readonly caFile?: string | undefined;
  readonly token: TokenSource;
  readonly clock: Clock;
  readonly agentId: string;
  /** Observes each call (latency metric). */
  readonly observe?: (route: string, outcome: string, ms: Milliseconds) => void;
}

const encodePath = (path: string): string => path.split('/').map(encodeURIComponent).join('/');

/** Network-level failure: try the next server. */
class ConnectionFailure extends Error {}

/** The server answered 429: retry after `retryAfterMs`. */
class RateLimited extends AppError {
  readonly retryAfterMs: Milliseconds;
  constructor(message: string, retryAfterMs: Milliseconds) {
    super('rate_limited', message, { headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) } });
    this.retryAfterMs = retryAfterMs;
  }
}

/** `Retry-After` as seconds or an HTTP date, in ms from `now`. */
export function retryAfterMs(header: string | string[] | undefined, now: Milliseconds): Milliseconds {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return DEFAULT_RETRY_AFTER_MS;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - now) : DEFAULT_RETRY_AFTER_MS;
}

/** The code to act on when a body names none we know (an older or foreign server). */
function codeOfStatus(status: number): ErrorCode {
  if (status === 404) return 'not_found';
  if (status === 403) return 'permission_denied';
  if (status === 401) return 'unauthenticated';
  if (status === 400) return 'bad_request';
  if (status === 429) return 'rate_limited';
  return 'upstream_error';
}

export function createUpstream(options: UpstreamOptions): Upstream {
  const ca = options.caFile ? readFileSync(options.caFile) : undefined;
  const pools = options.servers.map(
    (url) =>
      createPool(url, {
        connections: UPSTREAM_CONNECTIONS,
        keepAliveTimeout: UPSTREAM_KEEPALIVE_MS,
        headersTimeout: UPSTREAM_HEADERS_TIMEOUT_MS,
        bodyTimeout: UPSTREAM_BODY_TIMEOUT_MS,
        connect: { timeout: UPSTREAM_CONNECT_TIMEOUT_MS, ...(ca ? { ca } : {}) },
      }),
  );
  let preferred = 0;

  const sleep = (ms: Milliseconds, signal?: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      const handle = options.clock.setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => {
        handle.cancel();
        resolve();
      }, { once: true });
    });

  async function once<T>(
    pool: Pool,
    method: 'GET' | 'POST',
    path: string,
    body: string | undefined,
    check: (json: unknown) => Checked<T>,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    const token = options.token.current();
    // The agent id lets the server answer a staged rollout's canary with the candidate.
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': `config-sidecar-agent/${options.agentId}`, [HEADERS.agentId]: options.agentId };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Awaited<ReturnType<Pool['request']>>;
    try {
      response = await pool.request({ method, path, headers, body, signal: signal ?? null });
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
        throw new AppError('upstream_timeout', 'The server did not answer in time.', { cause: err });
      }
      if (code === 'UND_ERR_ABORTED' || signal?.aborted) throw new AppError('unavailable', 'The upstream call was cancelled.', { cause: err });
      throw new ConnectionFailure(code || (err as Error).message);
    }
    const declared = Number(response.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > UPSTREAM_MAX_BODY_BYTES) {
      response.body.destroy();
      throw new AppError('upstream_error', `The server's response is ${declared} bytes; the limit is ${UPSTREAM_MAX_BODY_BYTES}.`);
    }
    let text: string;
    try {
      text = await response.body.text();
    } catch (err) {
      throw new AppError('upstream_error', 'The server closed the response early.', { cause: err });
    }
    let json: unknown;
    try {
      json = JSON.parse(text) as unknown;
    } catch {
      throw new AppError('upstream_error', `The server answered ${response.statusCode} with a body that is not JSON.`);
    }
    const status = response.statusCode;
    if (status >= 200 && status < 300) {
      const parsed = check(json);
      if (!parsed.ok) throw new AppError('upstream_error', `The server's ${path.split('/')[2] ?? ''} response does not match the protocol.`);
      return parsed.value;
    }
    const detail = checkErrorBody(json);
    const message = detail.ok ? detail.value.error.message : `HTTP ${status}`;
    const named = detail.ok ? detail.value.error.code : '';
    const code: ErrorCode = isErrorCode(named) ? named : codeOfStatus(status);
    if (code === 'rate_limited' || status === 429) throw new RateLimited(`The server is rate limiting this agent: ${message}`, retryAfterMs(response.headers['retry-after'], options.clock.now()));
    switch (clientActionOf(code)) {
      case 'drop':
        if (code === 'permission_denied') throw new AppError(code, `The server refused this agent: ${message}`);
        if (code === 'unauthenticated') throw new AppError(code, `The server refused the agent's credential: ${message}`);
        throw new AppError(code, message);
      case 'retry':
        throw new AppError('upstream_error', `The server answered ${status} (${code}): ${message}`);
      case 'fail':
        // The request itself was refused (an unknown env, a bad path): the caller's error, as the server named it.
        throw new AppError(status >= 500 ? 'upstream_error' : code, message);
    }
  }

  /** One idempotent read with failover across servers and retries with backoff. */
  async function read<T>(
    route: string,
    method: 'GET' | 'POST',
    path: string,
    body: string | undefined,
    check: (json: unknown) => Checked<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const backoff = new Backoff({ baseMs: UPSTREAM_RETRY_BASE_MS, capMs: UPSTREAM_RETRY_CAP_MS });
    const attempts = Math.max(UPSTREAM_MAX_ATTEMPTS, pools.length);
    const started = performance.now();
    let last: AppError = new AppError('unavailable', 'No server configured.');
    const rateLimitedUntil = options.clock.now() + UPSTREAM_RATE_LIMIT_BUDGET_MS;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const index = (preferred + attempt) % pools.length;
      try {
        const result = await once(pools[index] as Pool, method, path, body, check, signal);
        preferred = index;
        options.observe?.(route, 'ok', performance.now() - started);
        return result;
      } catch (err) {
        if (err instanceof RateLimited) {
          // Not a failure of the server: wait as told (within the budget) and ask again; this try is free.
          const wait = err.retryAfterMs;
          if (options.clock.now() + wait > rateLimitedUntil || signal?.aborted) {
            options.observe?.(route, err.code, performance.now() - started);
            throw err;
          }
          await sleep(wait, signal);
          attempt -= 1;
          continue;
        }
        if (err instanceof ConnectionFailure) {
          last = new AppError('unavailable', `Cannot reach the server (${err.message}).`);
        } else if (err instanceof AppError && (err.code === 'upstream_error' || err.code === 'upstream_timeout')) {
          last = err;
        } else {
          options.observe?.(route, err instanceof AppError ? err.code : 'error', performance.now() - started);
          throw err;
        }
      }
      if (signal?.aborted) break;
      // Connection failures fail over to the next server at once; after a full round, back off.
      if ((attempt + 1) % pools.length === 0 && attempt + 1 < attempts) await sleep(backoff.next(), signal);
    }
    options.observe?.(route, last.code, performance.now() - started);
    throw last;
  }

  return {
    fetchEnvelope(ref, env, signal) {
      return read('envelope', 'GET', `/v1/envelopes/${encodePath(ref.namespace)}/${encodeURIComponent(ref.name)}?env=${encodeURIComponent(env)}`, undefined, checkEnvelopeResponse, signal);
    },
    fetchRingEnvelope(ref, env, signal) {
      return read('envelope', 'GET', `/v1/envelopes/${encodePath(ref.namespace)}/${encodeURIComponent(ref.name)}?env=${encodeURIComponent(env)}&ring=1`, undefined, checkRingEnvelopeResponse, signal);
    },
    fetchDeks(namespace, publicKey, signal) {
      // POST only because the key travels in a body; the call reads and is safe to retry.
      return read('deks', 'POST', `/v1/deks/${encodePath(namespace)}`, JSON.stringify({ publicKey }), checkDeksResponse, signal);
    },
    async close() {
      await Promise.all(pools.map((pool) => pool.close().catch(() => {})));
    },
  };
}
