/**
 * `config-sidecar/client` (also published alone as `@config-sidecar/client`):
 * a small typed client for Node applications, talking to the pod's agent over
 * its Unix socket (or 127.0.0.1 with the pod token).
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
 * a set (the resume point only moves at the end of one). `getRing` reads an
 * item's key ring (the current version and the previous ones still within
 * their grace), parsed, or as a JSON Web Key Set or a PEM bundle.
 *
 * It uses Node's own `http` module (a keep-alive agent over the socket) and
 * imports nothing from outside this folder, so the package installs alone,
 * with no dependency, and runs on Node 20 and later, as ESM or CommonJS.
 */
import { readFileSync } from 'node:fs';
import type * as NodeHttp from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { parseSseBlock, takeBlocks } from './sse-parser.ts';

// Not an ESM import of node:http: that reads every export, and on Node 22+ its WebSocket getter loads and compiles
// node's bundled fetch (undici), ~12 MiB in the application's process. getBuiltinModule (Node 20.16+) and require
// (older Node 20, ESM or CommonJS alike) return the module without reading its getters.
const { Agent, request: httpRequest } = process.getBuiltinModule?.('node:http') ?? (createRequire('/')('node:http') as typeof NodeHttp);

export const DEFAULT_SOCKET_PATH = '/run/config-sidecar/agent.sock';
export const SOCKET_ENV = 'CONFIG_SIDECAR_SOCKET';
const TOKEN_HEADER = 'x-config-sidecar-token';
const REQUEST_TIMEOUT_MS = 10_000;
const RECONNECT_BASE_MS = 100;
const RECONNECT_CAP_MS = 5_000;
const MAX_SOCKETS = 8;

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

/** One version in a key ring; `value` as in `Item`. */
export interface RingVersion<V = unknown> {
  readonly version: number;
  readonly value: V;
  readonly encoding?: 'utf8' | 'base64';
}

/** `getRing(path)`: the item's current version and the previous ones still within their grace. */
export interface KeyRing<V = unknown> {
  readonly namespace: string;
  readonly name: string;
  readonly kind: 'config' | 'secret';
  readonly env: string;
  readonly revision: number;
  readonly current: RingVersion<V>;
  /** Newest first; each stopped being current at `retiredAt` and leaves the ring at `expiresAt` (ISO 8601). */
  readonly previous: ReadonlyArray<RingVersion<V> & { readonly retiredAt: string; readonly expiresAt: string }>;
  /** Changes when the current version changes or a version joins or leaves the ring. */
  readonly etag: string;
  /** Seconds the ring may be behind the server (the agent could not reach it); 0 when fresh. */
  readonly staleSeconds: number;
}

/** A JSON Web Key with public members only (the agent strips `d`, `p`, `q`, `dp`, `dq`, `qi`, `k`). */
export interface PublicJwk {
  readonly kty: string;
  readonly kid?: string;
  readonly [member: string]: unknown;
}

/** `getRing(path, { format: 'jwks' | 'pem-bundle' })`: the ring rendered as a rendered file would hold it. */
export interface RenderedRing<T> {
  readonly revision: number;
  readonly etag: string;
  readonly staleSeconds: number;
  /** `jwks`: `{ keys }`, current key first. `pem-bundle`: the certificates, current first, as one PEM text. */
  readonly document: T;
}

export interface RingOptions {
  readonly signal?: AbortSignal;
}

export interface WatchEvent {
  readonly type: 'changed' | 'deleted' | 'rotated' | 'resync';
  /** The revision; pass it as `lastEventId` to resume. Events of one change set share it. */
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
  /**
   * The item's key ring (an item written with `ringGrace`): verifiers accept
   * `current` and every `previous` version. With `format: 'jwks'` the public
   * JSON Web Key Set (a ring of only symmetric keys is refused:
   * `invalid_argument`), with `format: 'pem-bundle'` the certificates as one
   * PEM text.
   */
  getRing<V = unknown>(path: string, options?: RingOptions & { readonly format?: 'json' }): Promise<KeyRing<V>>;
  getRing(path: string, options: RingOptions & { readonly format: 'jwks' }): Promise<RenderedRing<{ readonly keys: readonly PublicJwk[] }>>;
  getRing(path: string, options: RingOptions & { readonly format: 'pem-bundle' }): Promise<RenderedRing<string>>;
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

type RingFormat = 'json' | 'jwks' | 'pem-bundle';
const RING_FORMATS: readonly string[] = ['json', 'jwks', 'pem-bundle'] satisfies RingFormat[];

const encodePath = (path: string): string =>
  path
    .replace(/^\/+|\/+$/g, '')
    .split('/')
    .map(encodeURIComponent)
    .join('/');

/** Where requests go: a Unix socket, or host and port. */
type Target = { readonly socketPath: string } | { readonly host: string; readonly port: number };

function targetOf(options: ClientOptions): Target {
  if (!options.url) return { socketPath: options.socketPath ?? process.env[SOCKET_ENV] ?? DEFAULT_SOCKET_PATH };
  const url = new URL(options.url);
  if (url.protocol !== 'http:') throw new TypeError(`url: the agent's TCP listener speaks http on loopback; got ${url.protocol}`);
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) };
}

async function readBody(response: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  for (const chunk of chunks) chunk.fill(0);
  return body;
}

/** The agent's `{ error: { code, message } }`, or the status line when the body is not that. */
function agentError(status: number, body: Buffer): ConfigSidecarError {
  let code = 'error';
  let message = `HTTP ${status}`;
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { error?: { code?: string; message?: string } };
    code = parsed.error?.code ?? code;
    message = parsed.error?.message ?? message;
  } catch {
    // not JSON: keep the status line
  }
  return new ConfigSidecarError(code, status, message);
}

/** Full-jitter exponential backoff: uniform in [1, min(cap, base·2^attempt)]. */
function backoffMs(attempt: number): number {
  return Math.max(1, Math.floor(Math.random() * Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt, 20))));
}

export function createClient(options: ClientOptions = {}): ConfigSidecarClient {
  const target = targetOf(options);
  const where = 'socketPath' in target ? ` at ${target.socketPath}` : ` at ${options.url}`;
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_SOCKETS });

  const headers = (extra: Record<string, string> = {}): Record<string, string> => {
    const token = options.token ?? (options.tokenFile ? readFileSync(options.tokenFile, 'utf8').trim() : undefined);
    return { ...(token ? { [TOKEN_HEADER]: token } : {}), ...extra };
  };

  /** Sends a GET and resolves with the response head; rejects with `unreachable` when the agent cannot be reached. */
  function send(path: string, extraHeaders: Record<string, string>, signal: AbortSignal | undefined): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = httpRequest({ ...target, path, method: 'GET', headers: headers(extraHeaders), agent, ...(signal ? { signal } : {}) }, resolve);
      req.once('error', (err) => reject(new ConfigSidecarError('unreachable', 0, `cannot reach the agent${where}: ${err.message}`, { cause: err })));
      req.end();
    });
  }

  async function request(path: string, signal: AbortSignal | undefined): Promise<{ body: Buffer; headers: IncomingHttpHeaders }> {
    const response = await send(path, {}, signal ?? AbortSignal.timeout(timeoutMs));
    let body: Buffer;
    try {
      body = await readBody(response);
    } catch (err) {
      throw new ConfigSidecarError('unreachable', 0, `the agent${where} closed the response: ${(err as Error).message}`, { cause: err });
    }
    if (response.statusCode !== 200) throw agentError(response.statusCode ?? 0, body);
    return { body, headers: response.headers };
  }

  async function* watchEvents(path: string, opts: WatchOptions): AsyncGenerator<WatchEvent> {
    let lastEventId = opts.lastEventId;
    let attempt = 0;
    while (!opts.signal?.aborted) {
      let response: IncomingMessage;
      try {
        response = await send(path, lastEventId ? { 'last-event-id': lastEventId, accept: 'text/event-stream' } : { accept: 'text/event-stream' }, opts.signal);
      } catch (err) {
        if (opts.signal?.aborted) return;
        opts.onReconnect?.((err as Error).message);
        await sleep(backoffMs(attempt++), opts.signal);
        continue;
      }
      if (response.statusCode !== 200) {
        const status = response.statusCode ?? 0;
        const error = agentError(status, await readBody(response).catch(() => Buffer.alloc(0)));
        // 4xx will not get better by retrying (bad prefix, forbidden); 5xx and 429 might.
        if (status < 500 && status !== 429) throw error;
        opts.onReconnect?.(`the agent answered ${status} (${error.code})`);
        await sleep(backoffMs(attempt++), opts.signal);
        continue;
      }
      let buffer = '';
      try {
        response.setEncoding('utf8');
        for await (const chunk of response as AsyncIterable<string>) {
          attempt = 0;
          const { blocks, rest } = takeBlocks(buffer + chunk);
          buffer = rest;
          for (const block of blocks) {
            const parsed = parseSseBlock(block);
            if (!parsed || !parsed.event || !parsed.data) continue;
            const payload = JSON.parse(parsed.data) as Omit<WatchEvent, 'type' | 'id'>;
            // Inside a set the resume point stays before it, so a reconnect mid-set replays the whole set.
            if (payload.setRevision === undefined || payload.endsSet) lastEventId = parsed.id || lastEventId;
            yield { ...payload, type: parsed.event as WatchEvent['type'], id: parsed.id };
          }
        }
      } catch {
        // The agent went away mid-stream: reconnect and resume below.
      } finally {
        response.destroy();
      }
      if (opts.signal?.aborted) return;
      opts.onReconnect?.('the stream ended');
      await sleep(backoffMs(attempt++), opts.signal);
    }
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
    getRing: (async (path: string, opts: RingOptions & { readonly format?: RingFormat } = {}) => {
      const format = opts.format ?? 'json';
      if (!RING_FORMATS.includes(format)) throw new TypeError(`format: json, jwks or pem-bundle, not ${String(format)}`);
      const query = format === 'json' ? 'ring=1' : `ring=1&format=${format}`;
      const { body, headers: h } = await request(`/v1/items/${encodePath(path)}?${query}`, opts.signal);
      const meta = { revision: Number(h['x-config-revision'] ?? 0), etag: String(h.etag ?? ''), staleSeconds: Number(h['x-config-stale'] ?? 0) };
      try {
        if (format === 'pem-bundle') return { ...meta, document: body.toString('utf8') };
        const parsed = JSON.parse(body.toString('utf8')) as object;
        return format === 'jwks' ? { ...meta, document: parsed } : { ...parsed, staleSeconds: meta.staleSeconds };
      } finally {
        body.fill(0);
      }
    }) as ConfigSidecarClient['getRing'],
    watch(prefix, opts = {}) {
      return watchEvents(`/v1/watch?prefix=${encodeURIComponent(prefix.replace(/\/+$/, ''))}`, opts);
    },
    watchSets(prefix, opts = {}) {
      return groupSets(watchEvents(`/v1/watch?prefix=${encodeURIComponent(prefix.replace(/\/+$/, ''))}`, opts));
    },
    async close() {
      agent.destroy();
    },
  };
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
