/**
 * The agent's end of the gRPC Watch stream. It starts where `start()` says
 * (`now`, or after the applied position), fails over across `--server-grpc`
 * addresses, treats a stream silent for 3 heartbeat intervals as dead (and
 * HTTP/2 keepalive pings catch a dead connection under it), and reconnects
 * with the agent's own capped exponential backoff and full jitter (never a
 * tight loop). Each attempt gets a fresh channel: grpc-js's channel keeps its
 * own reconnect backoff (1 s × 1.6 up to 120 s), which would otherwise hold
 * an attempt back well past our cap after an outage. It knows nothing of the
 * cache: each event goes to `onEvent`.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { Backoff } from '../shared/backoff.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import type { Milliseconds } from '../shared/units.ts';
import { watchClientConstructor, watchEventFromWire, watchRequestToWire, type StartFrom, type WatchEvent } from '../shared/watch-proto.ts';
import type { TokenSource } from './token-source.ts';

/** Missed heartbeat intervals after which the stream is declared dead. */
export const MISSED_HEARTBEATS_DEAD = 3;
/** Heartbeat interval assumed until the server's first heartbeat says otherwise. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS: Milliseconds = 1_000;
/** An attempt whose first message (always a heartbeat or a resync) has not come by then is abandoned. */
export const FIRST_MESSAGE_TIMEOUT_MS: Milliseconds = 10_000;
/** HTTP/2 keepalive ping interval and the wait for its answer. */
export const KEEPALIVE_TIME_MS: Milliseconds = 10_000;
export const KEEPALIVE_TIMEOUT_MS: Milliseconds = 5_000;
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
  /** Where the next attempt starts (now, or after the applied position). */
  readonly start: () => StartFrom;
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
  const channelOptions = {
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    // A fresh channel per attempt has no backoff of its own; these bound it anyway.
    'grpc.initial_reconnect_backoff_ms': RECONNECT_BASE_MS,
    'grpc.max_reconnect_backoff_ms': RECONNECT_CAP_MS,
  };
  const backoff = new Backoff({ baseMs: RECONNECT_BASE_MS, capMs: RECONNECT_CAP_MS });
  let index = 0;
  let closed = false;
  let connected = false;
  let reconnects = 0;
  let call: grpc.ClientReadableStream<WireEvent> | undefined;
  let client: grpc.Client | undefined;
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
    }, connected ? heartbeatMs * MISSED_HEARTBEATS_DEAD : Math.max(FIRST_MESSAGE_TIMEOUT_MS, heartbeatMs * MISSED_HEARTBEATS_DEAD));
  };

  const closeChannel = (): void => {
    client?.close();
    client = undefined;
  };

  const fail = (reason: string): void => {
    if (!call) return;
    const failed = call;
    call = undefined;
    watchdog?.cancel();
    failed.removeAllListeners();
    failed.on('error', () => {});
    failed.cancel();
    closeChannel();
    const address = options.addresses[index] as string;
    const wasConnected = connected;
    connected = false;
    if (wasConnected) options.onState({ connected: false, address, reason });
    if (wasConnected && options.clock.now() - connectedAt >= STABLE_STREAM_MS) backoff.reset();
    if (!wasConnected) index = (index + 1) % options.addresses.length; // never answered: try the next server
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
    closeChannel();
    client = new Ctor(options.addresses[index] as string, credentials, channelOptions);
    const stub = client as unknown as {
      Watch(request: unknown, metadata: grpc.Metadata): grpc.ClientReadableStream<WireEvent>;
    };
    const metadata = new grpc.Metadata();
    const token = options.token.current();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    const start = options.start();
    const since = start.kind === 'after' ? start.position.revision : 0;
    const stream = stub.Watch(watchRequestToWire({ prefixes: options.prefixes, sinceRevision: since, start, agentId: options.agentId }), metadata);
    call = stream;
    armWatchdog();
    stream.on('data', (wire: WireEvent) => {
      if (call !== stream) return;
      const event = watchEventFromWire(wire);
      if (event?.type === 'heartbeat' && event.intervalMs > 0) heartbeatMs = event.intervalMs;
      const first = !connected;
      connected = true;
      armWatchdog();
      if (first) {
        connectedAt = options.clock.now();
        options.logger.info({ address: options.addresses[index], start: start.kind, sinceRevision: since }, 'watch stream connected');
        options.onState({ connected: true, address: options.addresses[index] as string });
      }
      if (!event) return; // a newer server's event kind: ignore
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
      closeChannel();
    },
  };
}
