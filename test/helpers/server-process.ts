/**
 * Test helpers for the control plane: start the real `config-sidecar server`
 * process on a temp data dir with port 0 everywhere, learn its addresses from
 * its "server listening" log line, talk REST with raw node:http (so paths are
 * sent exactly as written, `..` included) and open real gRPC Watch streams.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { backendEnvFor } from './postgres-backend.ts';
import { spawnCli, waitForStart, type LogLine } from './process.ts';
import { watchClientConstructor, watchEventFromWire, watchRequestToWire, type StartFrom, type WatchEvent } from '../../src/shared/watch-proto.ts';

export { CLI, type LogLine } from './process.ts';

export interface ServerProcess {
  readonly proc: ChildProcess;
  readonly dataDir: string;
  readonly httpUrl: string;
  readonly grpcAddress: string;
  readonly adminUrl: string;
  readonly rootToken: string;
  readonly kek: string;
  readonly logs: LogLine[];
  /** Every raw stdout+stderr chunk (for secret-leak checks). */
  readonly output: () => string;
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends a signal (SIGKILL follows if the process outlives its deadline) and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

export interface StartServerOptions {
  readonly dataDir?: string;
  readonly kek?: string;
  readonly rootToken?: string;
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
}

export async function makeTempDir(prefix = 'cs-server-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function startServerProcess(options: StartServerOptions = {}): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? (await makeTempDir());
  const kek = options.kek ?? randomBytes(32).toString('base64');
  const rootToken = options.rootToken ?? `root-${randomBytes(16).toString('hex')}`;
  // The PostgreSQL server-suite run (test/postgres-server-suite.test.ts) gives each data dir a database.
  const backendEnv = options.env?.CONFIG_SIDECAR_DATABASE_URL ? {} : await backendEnvFor(dataDir);
  const child = spawnCli(
    'server',
    ['server', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...(options.args ?? [])],
    { CONFIG_SIDECAR_KEK: kek, CONFIG_SIDECAR_ROOT_TOKEN: rootToken, CONFIG_SIDECAR_TEST_HOOKS: '1', ...backendEnv, ...options.env },
  );
  const listening = await waitForStart(child, (l) => l.msg === 'server listening');
  return {
    proc: child.proc,
    dataDir,
    httpUrl: listening.http as string,
    grpcAddress: listening.grpc as string,
    adminUrl: listening.admin as string,
    rootToken,
    kek,
    logs: child.logs,
    output: child.output,
    waitForLog: child.waitForLog,
    exited: child.exited,
    stop: child.stop,
  };
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** A raw HTTP request: the path is sent byte for byte (no URL normalisation). */
export function http(
  baseUrl: string,
  method: string,
  path: string,
  options: { token?: string | undefined; body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<HttpResult> {
  const url = new URL(baseUrl);
  const body = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        headers: {
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}),
          ...options.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Reads one metric's value from the admin /metrics text. */
export async function metricValue(adminUrl: string, name: string, labels = ''): Promise<number | undefined> {
  const res = await http(adminUrl, 'GET', '/metrics');
  const line = res.text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `) || (!labels && l.startsWith(`${name}{`)));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

// --- gRPC Watch -------------------------------------------------------------

export interface WatchHandle {
  readonly call: grpc.ClientReadableStream<unknown>;
  /** Resolves with the next event (in order), or rejects when the stream ends first. */
  next(timeoutMs?: number): Promise<WatchEvent>;
  /** Collects events until `predicate` holds for one; returns everything up to and including it. */
  until(predicate: (e: WatchEvent) => boolean, timeoutMs?: number): Promise<WatchEvent[]>;
  /** Resolves with the final status (code, details). */
  readonly status: Promise<{ code: number; details: string }>;
  close(): void;
}

export function openWatch(
  address: string,
  request: { prefixes: string[]; sinceRevision?: number; start?: StartFrom; agentId?: string },
  token: string | undefined,
  options: { stallAfterFirst?: boolean; credentials?: grpc.ChannelCredentials; channelOptions?: grpc.ChannelOptions } = {},
): WatchHandle {
  const Client = watchClientConstructor();
  const client = new Client(address, options.credentials ?? grpc.credentials.createInsecure(), options.channelOptions);
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  const call = (client as unknown as { watch: (r: unknown, m: grpc.Metadata) => grpc.ClientReadableStream<unknown> }).watch(
    watchRequestToWire({
      prefixes: request.prefixes,
      sinceRevision: request.sinceRevision ?? 0,
      agentId: request.agentId ?? 'test',
      ...(request.start ? { start: request.start } : {}),
    }),
    metadata,
  );
  const queue: WatchEvent[] = [];
  const waiters: Array<{ resolve: (e: WatchEvent) => void; reject: (err: Error) => void }> = [];
  let ended: Error | undefined;
  let stalled = false;
  const status = new Promise<{ code: number; details: string }>((resolve) => {
    call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
  });
  call.on('error', (err: grpc.ServiceError) => {
    ended = err;
    for (const w of waiters.splice(0)) w.reject(err);
  });
  call.on('end', () => {
    ended ??= new Error('stream ended');
    for (const w of waiters.splice(0)) w.reject(ended);
  });
  call.on('data', (wire: unknown) => {
    const event = watchEventFromWire(wire as Parameters<typeof watchEventFromWire>[0]);
    if (!event) return;
    // A "stalled" reader takes the first message, then stops reading (grpc-js then pauses the HTTP/2 stream).
    if (options.stallAfterFirst && !stalled) {
      stalled = true;
      call.pause();
    }
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(event);
    else queue.push(event);
  });
  const next = (timeoutMs = 15_000): Promise<WatchEvent> => {
    const queued = queue.shift();
    if (queued) return Promise.resolve(queued);
    if (ended) return Promise.reject(ended);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no watch event in time')), timeoutMs);
      waiters.push({
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
    });
  };
  return {
    call,
    next,
    async until(predicate, timeoutMs) {
      const seen: WatchEvent[] = [];
      for (;;) {
        const e = await next(timeoutMs);
        seen.push(e);
        if (predicate(e)) return seen;
      }
    },
    status,
    close() {
      call.cancel();
      client.close();
    },
  };
}
