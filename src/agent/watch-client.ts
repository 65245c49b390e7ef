/**
 * The agent's end of the gRPC Watch stream. It resumes from the revision the
 * agent last applied, fails over across `--server-grpc` addresses, treats a
 * stream silent for 3 heartbeat intervals as dead, and reconnects with capped
 * exponential backoff and full jitter (never a tight loop). It knows nothing
 * of the cache: each event goes to `onEvent`.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { Backoff } from '../shared/backoff.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import type { Milliseconds } from '../shared/units.ts';
import { watchClientConstructor, watchEventFromWire, watchRequestToWire, type WatchEvent } from '../shared/watch-proto.ts';
import type { TokenSource } from './token-source.ts';

/** Missed heartbeat intervals after which the stream is declared dead. */
export const MISSED_HEARTBEATS_DEAD = 3;
/** Heartbeat interval assumed until the server's first heartbeat says otherwise. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS: Milliseconds = 10_000;
export const RECONNECT_BASE_MS: Milliseconds = 200;
export const RECONNECT_CAP_MS: Milliseconds = 10_000;
/** A stream that stayed up this long resets the backoff. */
export const STABLE_STREAM_MS: Milliseconds = 5_000;

export interface WatchClientOptions {
  readonly addresses: readonly string[];
  readonly caFile?: string | undefined;
  readonly prefixes: readonly string[];
  readonly agentId: string;
  readonly token: TokenSource;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The last revision applied; the stream resumes after it. */
  readonly appliedRevision: () => number;
  readonly onEvent: (event: WatchEvent) => void;
  /** Connected (first message received) or lost. */
  readonly onState: (state: { connected: boolean; address: string; reason?: string }) => void;
  /** The server ended a stream with an error (before or after connecting): its status and message, for /readyz. */
  readonly onError?: (error: { code: number; details: string; address: string }) => void;
}

export interface WatchClient {
  readonly connected: boolean;
  readonly reconnects: number;
  /** Ends the stream and stays disconnected until `resume()` (test hooks). */
  pause(): void;
  resume(): void;
  close(): void;
}

type WireEvent = Parameters<typeof watchEventFromWire>[0];

export function startWatchClient(options: WatchClientOptions): WatchClient {
  const Ctor = watchClientConstructor();
  const credentials = options.caFile ? grpc.credentials.createSsl(readFileSync(options.caFile)) : grpc.credentials.createInsecure();
  const clients = options.addresses.map((address) => new Ctor(address, credentials, { 'grpc.keepalive_time_ms': 30_000 }));
  const backoff = new Backoff({ baseMs: RECONNECT_BASE_MS, capMs: RECONNECT_CAP_MS });
  let index = 0;
  let closed = false;
  let connected = false;
  let reconnects = 0;
  let call: grpc.ClientReadableStream<WireEvent> | undefined;
  let watchdog: TimerHandle | undefined;
  let retry: TimerHandle | undefined;
  let heartbeatMs = DEFAULT_HEARTBEAT_INTERVAL_MS;
  let connectedAt = 0;
  let paused = false;

  const armWatchdog = (): void => {
    watchdog?.cancel();
    watchdog = options.clock.setTimeout(() => {
      options.logger.warn({ address: options.addresses[index], heartbeatMs }, 'watch stream silent for 3 heartbeat intervals; reconnecting');
      fail('heartbeat timeout');
    }, heartbeatMs * MISSED_HEARTBEATS_DEAD);
  };

  const fail = (reason: string): void => {
    if (!call) return;
    const failed = call;
    call = undefined;
    watchdog?.cancel();
    failed.removeAllListeners();
    failed.on('error', () => {});
    failed.cancel();
    const address = options.addresses[index] as string;
    const wasConnected = connected;
    connected = false;
    if (wasConnected) options.onState({ connected: false, address, reason });
    if (wasConnected && options.clock.now() - connectedAt >= STABLE_STREAM_MS) backoff.reset();
    if (!wasConnected) index = (index + 1) % clients.length; // never answered: try the next server
    schedule();
  };

  const schedule = (): void => {
    if (closed || paused) return;
    const delay = backoff.next();
    reconnects += 1;
    retry = options.clock.setTimeout(open, delay);
  };

  const open = (): void => {
    if (closed || paused) return;
    const client = clients[index] as unknown as {
      Watch(request: unknown, metadata: grpc.Metadata): grpc.ClientReadableStream<WireEvent>;
    };
    const metadata = new grpc.Metadata();
    const token = options.token.current();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    const since = options.appliedRevision();
    const stream = client.Watch(watchRequestToWire({ prefixes: options.prefixes, sinceRevision: since, agentId: options.agentId }), metadata);
    call = stream;
    armWatchdog();
    stream.on('data', (wire: WireEvent) => {
      if (call !== stream) return;
      armWatchdog();
      const event = watchEventFromWire(wire);
      if (!connected) {
        connected = true;
        connectedAt = options.clock.now();
        options.logger.info({ address: options.addresses[index], sinceRevision: since }, 'watch stream connected');
        options.onState({ connected: true, address: options.addresses[index] as string });
      }
      if (!event) return; // a newer server's event kind: ignore
      if (event.type === 'heartbeat' && event.intervalMs > 0 && event.intervalMs !== heartbeatMs) {
        heartbeatMs = event.intervalMs;
        armWatchdog();
      }
      options.onEvent(event);
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (call !== stream) return;
      options.logger.warn({ address: options.addresses[index], code: err.code, details: err.details }, 'watch stream failed');
      options.onError?.({ code: err.code, details: err.details, address: options.addresses[index] as string });
      fail(err.details || `grpc status ${err.code}`);
    });
    stream.on('end', () => {
      if (call !== stream) return;
      fail('stream ended');
    });
  };

  open();
  return {
    get connected() {
      return connected;
    },
    get reconnects() {
      return reconnects;
    },
    pause() {
      paused = true;
      retry?.cancel();
      fail('paused');
    },
    resume() {
      if (!paused) return;
      paused = false;
      backoff.reset();
      open();
    },
    close() {
      if (closed) return;
      closed = true;
      retry?.cancel();
      watchdog?.cancel();
      if (call) {
        const c = call;
        call = undefined;
        c.removeAllListeners();
        c.on('error', () => {});
        c.cancel();
      }
      for (const client of clients) client.close();
    },
  };
}
