/**
 * The thin listeners in front of `handleDataRequest`: the Unix socket (mode
 * 0660 in its own directory, a stale socket removed only when nobody answers
 * on it) and the 127.0.0.1 TCP listener (pod token required). Both carry the
 * same limits against slow or oversized requests.
 */
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import type { IncomingMessage, OutgoingHttpHeader, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { CONNECTIONS_CHECK_MS, limitConnections } from '../shared/connection-limit.ts';
import { createServer } from '../shared/node-http.ts';
import { SettingError } from '../shared/settings.ts';
import { checkWritableDir, dirGroup, keepGroup } from './volume-access.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import { AppError } from '../shared/errors.ts';
import { newTokenProof, type TokenProof } from './pod-token.ts';
import { errorResult, handleDataRequest, MAX_REQUEST_BODY_BYTES, type BodyResult, type DataResult, type HandlerDeps, type ListenerKind, type SseResult } from './request-handler.ts';

export const SOCKET_MODE = 0o660;
export const SOCKET_DIR_MODE = 0o750;
export const TOKEN_FILE_NAME = 'token';
export const TOKEN_FILE_MODE = 0o440;
export const TOKEN_BYTES = 32;
export const MAX_HEADER_BYTES: Bytes = 16 * 1024;
/** A client must send its whole request head within this time (slowloris). */
export const HEADERS_TIMEOUT_MS: Milliseconds = 10_000;
export const REQUEST_TIMEOUT_MS: Milliseconds = 15_000;
export const KEEPALIVE_TIMEOUT_MS: Milliseconds = 30_000;
/** Connections per listener; past it the oldest one without a request yet is shed (shared/connection-limit.ts). */
export const MAX_CONNECTIONS = 1024;
/** Probing an existing socket file: how long to wait for a live agent to accept. */
const PROBE_TIMEOUT_MS: Milliseconds = 500;

/** Request limits; tests shorten them, the agent uses the defaults above. */
export interface DataServerLimits {
  readonly headersTimeoutMs: Milliseconds;
  readonly requestTimeoutMs: Milliseconds;
}

/** Requests received by the data listeners sharing it; only ever incremented (the heap trimmer reads it to tell idle). */
export interface RequestCount {
  requests: number;
}

export interface DataServerHooks {
  readonly deps: HandlerDeps;
  readonly received?: RequestCount;
  readonly limits?: DataServerLimits;
  readonly serveSse: (res: ServerResponse, result: SseResult) => void;
  readonly onResponse?: (listener: ListenerKind, status: number) => void;
  /** Connections per listener; default MAX_CONNECTIONS (under a memory limit the agent's budget, memory-budget.ts). */
  readonly maxConnections?: number;
  /** POST /v1/health: takes the body, answers the state it now reports (throws AppError for a bad body). */
  readonly appHealth?: (body: Buffer) => unknown;
}

/** Reads a POST /v1/health body (at most MAX_REQUEST_BODY_BYTES, checked before routing) and answers the health state. */
function healthResponse(req: IncomingMessage, hooks: DataServerHooks): Promise<BodyResult> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REQUEST_BODY_BYTES) reject(new AppError('payload_too_large', `The health body is at most ${MAX_REQUEST_BODY_BYTES} bytes.`));
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  }).then((body) => {
    if (!hooks.appHealth) throw new AppError('not_found', 'This agent takes no health signal.');
    const json = Buffer.from(JSON.stringify(hooks.appHealth(body)));
    return { kind: 'body', status: 200, headers: { 'content-type': 'application/json', 'content-length': json.length, 'cache-control': 'no-store' }, body: json } satisfies BodyResult;
  });
}

/**
 * Writes a complete response and ends its value lease once the body's bytes
 * have left. `end()` flushes the corked head and body in one writev; when the
 * kernel took all of it (`writableLength` 0: nothing queued in the response
 * or the socket) the lease ends at once, so a cached read registers no
 * listener and allocates no closure. Otherwise (a full socket buffer, or a
 * pipelined response waiting for its turn) the queued chunks still point at
 * the cached bytes, and the lease ends on 'close'.
 */
export function sendResult(res: ServerResponse, result: BodyResult, release: (lease: NonNullable<BodyResult['lease']>) => void): void {
  // node only reads the headers (its types ask for a mutable list).
  res.writeHead(result.status, result.headers as OutgoingHttpHeaders | OutgoingHttpHeader[]);
  res.end(result.body);
  const { lease, scrub } = result;
  if (lease === undefined && scrub === undefined) return;
  if (res.writableLength === 0 && res.socket !== null) {
    if (lease !== undefined) release(lease);
    scrub?.fill(0);
  } else endOnClose(res, lease, scrub, release);
}

/**
 * The queued case of `sendResult`, in its own function: a closure in
 * `sendResult` itself would make V8 allocate its captured variables' context
 * on every call, the cached read's included.
 */
function endOnClose(res: ServerResponse, lease: BodyResult['lease'], scrub: Buffer | undefined, release: (lease: NonNullable<BodyResult['lease']>) => void): void {
  res.on('close', () => {
    if (lease !== undefined) release(lease);
    scrub?.fill(0);
  });
}

export function createDataServer(listener: ListenerKind, hooks: DataServerHooks): Server {
  const server = createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: hooks.limits?.headersTimeoutMs ?? HEADERS_TIMEOUT_MS,
      requestTimeout: hooks.limits?.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
      keepAliveTimeout: KEEPALIVE_TIMEOUT_MS,
      // Enforce the timeouts promptly (Node checks every 30 s by default).
      connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_MS, hooks.limits?.headersTimeoutMs ?? HEADERS_TIMEOUT_MS),
      // Small responses go out at once.
      noDelay: true,
    },
    (req: IncomingMessage, res: ServerResponse) => {
      limit.served(req.socket);
      if (received !== undefined) received.requests++;
      // A fresh literal, not one reused object: storing each request's (young) strings and headers into a
      // long-lived object costs a write barrier per field, more than the allocation (measured, docs/FOOTPRINT-LOG.md q16).
      const result = handleDataRequest({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, listener, tokenProof: proofs === undefined ? undefined : proofOf(proofs, req.socket) }, hooks.deps);
      // A cache hit is answered in this tick; anything else when its promise settles.
      if (result instanceof Promise) respondWhenSettled(req, res, result);
      else respond(req, res, result);
    },
  );
  // The closures that wait for a promise live in their own function: in the request callback or in
  // `respond` they would make V8 allocate a context for `req` and `res` on every call, a cached read's too.
  function respondWhenSettled(req: IncomingMessage, res: ServerResponse, pending: Promise<DataResult>): void {
    pending.then(
      (settled) => respond(req, res, settled),
      (err: unknown) => respond(req, res, errorResult(err)),
    );
  }
  // Per TCP connection, what it proved with the pod token (pod-token.ts); a WeakMap, so node's Socket gets no new property.
  const proofs = listener === 'tcp' ? new WeakMap<Socket, TokenProof>() : undefined;
  const release = (lease: NonNullable<BodyResult['lease']>): void => hooks.deps.release(lease);
  const received = hooks.received;
  const onResponse = hooks.onResponse;
  function respond(req: IncomingMessage, res: ServerResponse, result: DataResult): void {
    if (result.kind === 'sse') {
      hooks.serveSse(res, result);
      onResponse?.(listener, 200);
      return;
    }
    if (result.kind === 'health') {
      respondWhenSettled(req, res, healthResponse(req, hooks));
      return;
    }
    // 413: do not read the unwanted body; 401: a caller without the pod token never keeps a connection slot.
    if (result.status === 413 || result.status === 401) res.shouldKeepAlive = false;
    sendResult(res, result, release);
    onResponse?.(listener, result.status);
  }
  // Per listener: a flood on the TCP listener never touches the socket's budget,
  // and sheds its own oldest request-less connection before a client's.
  const limit = limitConnections(server, { max: hooks.maxConnections ?? MAX_CONNECTIONS, callerMarksServed: true });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const code = err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'bad_request' : 'bad_request';
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const body = JSON.stringify({ error: { code, message: status === 408 ? 'The request took too long to arrive.' : status === 431 ? 'Request headers are too large.' : 'Malformed request.' } });
    socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  return server;
}

/** The connection's pod-token proof, made empty on its first request. */
function proofOf(proofs: WeakMap<Socket, TokenProof>, socket: Socket): TokenProof {
  let proof = proofs.get(socket);
  if (proof === undefined) proofs.set(socket, (proof = newTokenProof()));
  return proof;
}

/** True when something accepts connections on the socket path. */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    const timer = setTimeout(() => {
      probe.destroy();
      resolve(true); // accepted nothing but did not refuse either: assume live, refuse to steal it
    }, PROBE_TIMEOUT_MS);
    probe.once('connect', () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/**
 * Prepares the socket path: creates its directory, and removes a stale socket
 * left by a crashed agent, but refuses when a live agent answers on it or the
 * path is not a socket (never deletes someone else's file).
 */
export async function prepareSocketPath(path: string): Promise<void> {
  // A kubelet-made volume (root:<fsGroup> 2777) is used as it is; only a missing directory is created.
  await checkWritableDir(dirname(path), '--socket (CONFIG_SIDECAR_SOCKET)');
  await mkdir(dirname(path), { recursive: true, mode: SOCKET_DIR_MODE });
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new SettingError('--socket (CONFIG_SIDECAR_SOCKET)', `${path} exists and is not a socket; refusing to replace it`);
  if (await socketIsLive(path)) {
    throw new SettingError('--socket (CONFIG_SIDECAR_SOCKET)', `another agent is serving on ${path}; stop it or choose another path`);
  }
  await unlink(path);
}

/**
 * Listens on the Unix socket with mode 0660 and the socket directory's group
 * (the pod's fsGroup), so the app containers can connect (the umask is
 * narrowed while binding, so there is no wider window).
 */
export async function listenSocket(server: Server, path: string): Promise<void> {
  await prepareSocketPath(path);
  const previous = process.umask(0o117);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(previous);
  }
  await keepGroup(path, await dirGroup(dirname(path)));
  await chmod(path, SOCKET_MODE);
}

/** Writes a fresh random pod token next to the socket (mode 0440, the directory's group) and returns it. */
export async function writePodToken(socketPath: string): Promise<{ path: string; token: Buffer }> {
  const path = join(dirname(socketPath), TOKEN_FILE_NAME);
  const token = Buffer.from(randomBytes(TOKEN_BYTES).toString('base64url'));
  const tmp = `${path}.${process.pid}.tmp`;
  await unlink(tmp).catch(() => {});
  await writeFile(tmp, token, { mode: TOKEN_FILE_MODE, flag: 'wx' });
  await keepGroup(tmp, await dirGroup(dirname(path)));
  await chmod(tmp, TOKEN_FILE_MODE);
  await rename(tmp, path);
  return { path, token };
}

