/**
 * `config-sidecar/client`: a small typed client for Node applications, talking
 * to the pod's agent over its Unix socket (or 127.0.0.1 with the pod token) on
 * an undici pool.
 *
 *   const client = createClient();                    // $CONFIG_SIDECAR_SOCKET or the default path
 *   const { value } = await client.get('production/ml-service/db-password');
 *   for await (const event of client.watch('production/ml-service')) { ... }
 *
 * `watch` is an async iterator over the agent's SSE stream that reconnects on
 * its own and resumes with `Last-Event-ID`, so an agent restart costs no
 * event: the agent replays what was missed, or sends an explicit `resync`
 * event (refetch what you use) when it cannot. A change set (several items
 * changed atomically, `POST /v1/changes`) arrives as consecutive events with
 * the same `setRevision` (also their SSE id), the last one marked `endsSet`;
 * `watchSets` yields each set as one array, and a resume never starts inside
 * a set (the resume point only moves at the end of one). It only imports undici and the
 * backoff helper, so an application pays for nothing else.
 */
import { readFileSync } from 'node:fs';
import { createPool, type Pool } from '../shared/undici-pool.ts';
import { Backoff } from '../shared/backoff.ts';

export const DEFAULT_SOCKET_PATH = '/run/config-sidecar/agent.sock';
export const SOCKET_ENV = 'CONFIG_SIDECAR_SOCKET';
const TOKEN_HEADER = 'x-config-sidecar-token';
const REQUEST_TIMEOUT_MS = 10_000;
const RECONNECT_BASE_MS = 100;
const RECONNECT_CAP_MS = 5_000;

export interface ClientOptions {
  /** Unix socket of the agent. Default: $CONFIG_SIDECAR_SOCKET, else /run/config-sidecar/agent.sock. */
  readonly socketPath?: string;
  /** Use the TCP listener instead, e.g. http://127.0.0.1:8430 (needs `token` or `tokenFile`). */
  readonly url?: string;
  readonly token?: string;
  /** The agent's `token` file; re-read on every request so an agent restart is picked up. */
  readonly tokenFile?: string;
  /** Per-request timeout in milliseconds. @default 10000 */
  readonly timeoutMs?: number;
}

export interface Item<V = unknown> {
  readonly namespace: string;
  readonly name: string;
  readonly kind: 'config' | 'secret';
  readonly env: string;
  readonly version: number;
  readonly revision: number;
  /** Config: the merged JSON value. Secret: UTF-8 text, or base64 when `encoding` is `base64`. */
  readonly value: V;
  readonly encoding?: 'utf8' | 'base64';
  readonly etag: string;
  /** Seconds the value may be behind the server (the agent could not reach it); 0 when fresh. */
  readonly staleSeconds: number;
}

export interface WatchEvent {
  readonly type: 'changed' | 'deleted' | 'rotated' | 'resync';
  /** The revision (a change set's members: the set's last revision); pass it as `lastEventId` to resume. */
  readonly id: string;
  readonly namespace: string;
  readonly name?: string;
  readonly version?: number;
  readonly revision: number;
  /** Set on the members of a change set: the set's last revision. */
  readonly setRevision?: number;
  /** True on the last member of a set this agent serves: act on the set now. */
  readonly endsSet?: true;
}

export interface WatchOptions {
  /** Resume after this event id (revision). */
  readonly lastEventId?: string;
  readonly signal?: AbortSignal;
  /** Called before each reconnect (the agent restarted or is unreachable), with why. */
  readonly onReconnect?: (reason: string) => void;
}

/** An error answered by the agent (or a failure to reach it). */
export class ConfigSidecarError extends Error {
  override readonly name = 'ConfigSidecarError';
  /** The agent's error code (`not_found`, `permission_denied`, ...) or `unreachable`. */
  readonly code: string;
  /** HTTP status, 0 when the agent could not be reached. */
  readonly status: number;
  constructor(code: string, status: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.status = status;
  }
}

export interface ConfigSidecarClient {
  get<V = unknown>(path: string, options?: { signal?: AbortSignal }): Promise<Item<V>>;
  /** The raw bytes (a secret's bytes, or a config's merged JSON). */
  getRaw(path: string, options?: { signal?: AbortSignal }): Promise<Buffer>;
  watch(prefix: string, options?: WatchOptions): AsyncIterable<WatchEvent>;
  /**
   * The same stream with each change set delivered as one array (every
   * member, in revision order); any other event is an array of one. Reload
   * what a set touched once, after the array, and no reader of yours sees
   * one member new and another old.
   */
  watchSets(prefix: string, options?: WatchOptions): AsyncIterable<readonly WatchEvent[]>;
  close(): Promise<void>;
}

const encodePath = (path: string): string =>
  path
    .replace(/^\/+|\/+$/g, '')
    .split('/')
    .map(encodeURIComponent)
    .join('/');

export function createClient(options: ClientOptions = {}): ConfigSidecarClient {
  const socketPath = options.url ? undefined : (options.socketPath ?? process.env[SOCKET_ENV] ?? DEFAULT_SOCKET_PATH);
  const pool = createPool(options.url ?? 'http://agent', {
    ...(socketPath ? { socketPath } : {}),
    connections: 8,
    headersTimeout: options.timeoutMs ?? REQUEST_TIMEOUT_MS,
  });
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;

  const headers = (extra: Record<string, string> = {}): Record<string, string> => {
    const token = options.token ?? (options.tokenFile ? readFileSync(options.tokenFile, 'utf8').trim() : undefined);
    return { ...(token ? { [TOKEN_HEADER]: token } : {}), ...extra };
  };

  async function request(path: string, signal: AbortSignal | undefined): Promise<{ body: Buffer; headers: Record<string, string | string[] | undefined> }> {
    let response;
    try {
      response = await pool.request({ method: 'GET', path, headers: headers(), signal: signal ?? AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw new ConfigSidecarError('unreachable', 0, `cannot reach the agent${socketPath ? ` at ${socketPath}` : ''}: ${(err as Error).message}`, { cause: err });
    }
    const body = Buffer.from(await response.body.arrayBuffer());
    if (response.statusCode !== 200) {
      let code = 'error';
      let message = `HTTP ${response.statusCode}`;
      try {
        const parsed = JSON.parse(body.toString('utf8')) as { error?: { code?: string; message?: string } };
        code = parsed.error?.code ?? code;
        message = parsed.error?.message ?? message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ConfigSidecarError(code, response.statusCode, message);
    }
    return { body, headers: response.headers };
  }

  return {
    async get<V>(path: string, opts: { signal?: AbortSignal } = {}) {
      const { body, headers: h } = await request(`/v1/items/${encodePath(path)}`, opts.signal);
      const parsed = JSON.parse(body.toString('utf8')) as Omit<Item<V>, 'etag' | 'staleSeconds'>;
      body.fill(0);
      return { ...parsed, etag: String(h.etag ?? ''), staleSeconds: Number(h['x-config-stale'] ?? 0) };
    },
    async getRaw(path, opts = {}) {
      return (await request(`/v1/items/${encodePath(path)}?format=raw`, opts.signal)).body;
    },
    watch(prefix, opts = {}) {
      return watchEvents(pool, `/v1/watch?prefix=${encodeURIComponent(prefix.replace(/\/+$/, ''))}`, headers, opts);
    },
    watchSets(prefix, opts = {}) {
      return groupSets(watchEvents(pool, `/v1/watch?prefix=${encodeURIComponent(prefix.replace(/\/+$/, ''))}`, headers, opts));
    },
    async close() {
      await pool.close();
    },
  };
}

/** Parses one SSE block (`event:`/`id:`/`data:` lines); comments give undefined. */
function parseBlock(block: string): WatchEvent | undefined {
  let type = '';
  let id = '';
  let data = '';
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const cut = line.indexOf(':');
    const field = cut === -1 ? line : line.slice(0, cut);
    const value = cut === -1 ? '' : line.slice(cut + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'id') id = value;
    else if (field === 'data') data += data ? `\n${value}` : value;
  }
  if (!type || !data) return undefined;
  const payload = JSON.parse(data) as Omit<WatchEvent, 'type' | 'id'>;
  return { ...payload, type: type as WatchEvent['type'], id };
}

async function* watchEvents(
  pool: Pool,
  path: string,
  headers: (extra?: Record<string, string>) => Record<string, string>,
  options: WatchOptions,
): AsyncGenerator<WatchEvent> {
  let lastEventId = options.lastEventId;
  const backoff = new Backoff({ baseMs: RECONNECT_BASE_MS, capMs: RECONNECT_CAP_MS });
  while (!options.signal?.aborted) {
    let response;
    try {
      response = await pool.request({
        method: 'GET',
        path,
        headers: headers(lastEventId ? { 'last-event-id': lastEventId, accept: 'text/event-stream' } : { accept: 'text/event-stream' }),
        signal: options.signal ?? null,
        bodyTimeout: 0,
      });
    } catch (err) {
      if (options.signal?.aborted) return;
      options.onReconnect?.(`cannot reach the agent: ${(err as Error).message}`);
      await sleep(backoff.next(), options.signal);
      continue;
    }
    if (response.statusCode !== 200) {
      const text = await response.body.text();
      let code = 'error';
      let message = `HTTP ${response.statusCode}`;
      try {
        const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
        code = parsed.error?.code ?? code;
        message = parsed.error?.message ?? message;
      } catch {
        // keep the status
      }
      // 4xx will not get better by retrying (bad prefix, forbidden); 5xx and 429 might.
      if (response.statusCode < 500 && response.statusCode !== 429) throw new ConfigSidecarError(code, response.statusCode, message);
      options.onReconnect?.(`the agent answered ${response.statusCode} (${code})`);
      await sleep(backoff.next(), options.signal);
      continue;
    }
    let buffer = '';
    try {
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        backoff.reset();
        buffer += chunk.toString('utf8');
        let cut: number;
        while ((cut = buffer.indexOf('\n\n')) !== -1) {
          const event = parseBlock(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!event) continue;
          // Inside a set the resume point stays before it, so a reconnect mid-set replays the whole set.
          if (event.setRevision === undefined || event.endsSet) lastEventId = event.id || lastEventId;
          yield event;
        }
      }
    } catch {
      // The agent went away mid-stream: reconnect and resume below.
    }
    if (options.signal?.aborted) return;
    options.onReconnect?.('the stream ended');
    await sleep(backoff.next(), options.signal);
  }
}

/** Collects each change set's members into one array (a reconnect mid-set starts the set again). */
async function* groupSets(events: AsyncIterable<WatchEvent>): AsyncGenerator<readonly WatchEvent[]> {
  let pending: WatchEvent[] = [];
  for await (const event of events) {
    if (event.setRevision === undefined) {
      if (pending.length > 0) yield pending;
      pending = [];
      yield [event];
      continue;
    }
    // A member of another set than the one pending: the pending one was cut by a reconnect and is replayed.
    if (pending.length > 0 && pending[0]?.setRevision !== event.setRevision) pending = [];
    if (pending.some((e) => e.revision === event.revision)) pending = pending.filter((e) => e.revision < event.revision);
    pending.push(event);
    if (event.endsSet) {
      yield pending;
      pending = [];
    }
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
