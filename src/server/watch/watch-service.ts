/**
 * The gRPC Watch service: authenticates each call from its metadata, refuses
 * (never filters) prefixes the caller may not read, and hands committed
 * events to the fan-out (fan-out.ts: after the write is acknowledged, encoded
 * once, in slices) and the streams to one heartbeat timer
 * (heartbeat-ticker.ts). Streams are re-checked when the policy changes and
 * ended when their credential expires.
 */
import type * as grpc from '@grpc/grpc-js';
import { AppError, GrpcStatus, toAppError } from '../../shared/errors.ts';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { Logger } from '../../shared/logger.ts';
import { validatePrefix } from '../../shared/paths.ts';
import { watchRequestFromWire, type StartFrom } from '../../shared/watch-proto.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { AuditEntry, ControlPlane, LogEvent } from '../control-plane.ts';
import type { Authenticator, Principal } from '../auth/authenticator.ts';
import type { Policy } from '../auth/policy.ts';
import type { ServerMetrics } from '../metrics.ts';
import type { RateLimiter } from '../rate-limiter.ts';
import { UNAUTHENTICATED_SUBJECT, type RefusalAudit } from '../refusal-audit.ts';
import { passThroughServiceDefinition } from './event-codec.ts';
import { encodeEvents, type LayerSource } from './event-encoder.ts';
import { FanOut, type Audience } from './fan-out.ts';
import { HeartbeatTicker } from './heartbeat-ticker.ts';
import { WatchStream, type EndReason, type WatchLog } from './watch-stream.ts';

/** Prefixes as an unauthenticated caller sent them, bounded: the audit row's target (not part of its kind). */
const REFUSED_TARGET_MAX_CHARS = 256;

/** The address of a gRPC peer (`host:port`, `[v6]:port`) without its port, which changes with every connection. */
export function peerHost(peer: string): string {
  const host = peer.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  return host === '' ? 'unknown' : host.slice(0, 64);
}

/** For the log line: where the client asked to start (never more than ids and numbers). */
function describeStart(start: StartFrom | undefined): string {
  if (!start || start.kind === 'now') return 'now';
  if (start.kind === 'legacy') return `since ${start.sinceRevision}`;
  return `after ${start.position.storeId}@${start.position.revision}`;
}

export interface WatchServiceOptions {
  readonly controlPlane: ControlPlane;
  readonly authenticator: Authenticator;
  readonly policy: () => Policy;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: ServerMetrics;
  readonly heartbeatInterval: Milliseconds;
  readonly bound: number;
  /** Events per replay read (tests make it small). @default REPLAY_PAGE */
  readonly replayPage?: number | undefined;
  /** Open streams per pod key (auth/identity.ts); more are refused with RESOURCE_EXHAUSTED. */
  readonly maxStreamsPerPod: number;
  /** Watch opens per pod key; a burst of opens is refused with RESOURCE_EXHAUSTED. */
  readonly openLimiter: RateLimiter;
  /** Where refused opens are audited (aggregated). */
  readonly refusals: RefusalAudit;
}

export interface WatchService {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  /** Re-checks every open stream against a new policy. */
  recheck(policy: Policy): void;
  /**
   * Sends committed events only to the streams `audience` picks (a targeted
   * event); every other stream just moves its bookmark past them.
   */
  publishTo(events: readonly LogEvent[], audience: Audience): void;
  /** Resolves once every event committed so far has been offered to every stream. */
  delivered(): Promise<void>;
  /** Ends every stream with UNAVAILABLE (shutdown) and stops the fan-out. */
  close(): void;
  readonly openStreams: number;
}

interface StreamAuth {
  readonly principal: Principal;
  /** When the credential ends (a reload of the auth file may move it for a static token). */
  expiresAt: number | undefined;
  expiry?: TimerHandle;
  /** Secret values sent inline since the last audit row for this stream. */
  secretsInline: number;
}

/**
 * Secrets a stream delivers inline are audited in aggregate: one row per
 * stream when it ends and at most one per stream per this interval, instead of
 * a row per event (a hot secret fanned out to every pod would flood the log).
 */
export const INLINE_AUDIT_INTERVAL_MS: Milliseconds = 10 * 60 * 1000;

export async function createWatchService(options: WatchServiceOptions): Promise<WatchService> {
  const { controlPlane, metrics, logger } = options;
  const streams = new Map<WatchStream, StreamAuth>();
  const perPod = new Map<string, number>();
  let nextId = 1;
  const layerSource: LayerSource = (refs) => controlPlane.sealedLayers(refs);
  const log: WatchLog = {
    page: (after, limit) => controlPlane.logPage(after, limit),
    head: () => controlPlane.logHead(),
    encode: (events) => encodeEvents(events, layerSource, logger),
  };
  let highWater = 0;
  let closing = false;

  const fanOut = new FanOut({
    encode: (events, wanted) => encodeEvents(events, layerSource, logger, wanted),
    streams: () => streams.keys(),
    logger,
    onDone: (seconds) => metrics.watchFanOutDuration.observe(seconds),
  });
  const heartbeats = new HeartbeatTicker({ clock: options.clock, interval: options.heartbeatInterval, streams: () => streams.keys() });
  const unsubscribe = controlPlane.onCommitted((events: readonly LogEvent[]) => {
    for (const event of events) metrics.events.inc({ type: event.type });
    fanOut.publish(events);
  });
  // This replica could not deliver events that retention compacted first (a
  // PostgreSQL replica cut off from the database for too long): its streams
  // would silently miss them, so end them; clients resume and get ResyncRequired.
  const unsubscribeLost =
    controlPlane.onEventsLost?.((lost) => {
      for (const stream of [...streams.keys()]) {
        stream.end(GrpcStatus.UNAVAILABLE, `This replica missed compacted events after revision ${lost.deliveredRevision}; reconnect and resume.`, 'error');
      }
    }) ?? (() => undefined);

  // Watch opens and refusals are audited; a failed audit write is logged and does not decide the answer.
  const auditBestEffort = async (entry: AuditEntry): Promise<void> => {
    try {
      await controlPlane.audit(entry);
    } catch (err) {
      logger.error({ err: (err as Error).message, subject: entry.subject, action: entry.action }, 'audit write failed');
    }
  };

  const auditInline = (stream: WatchStream, auth: StreamAuth): void => {
    if (auth.secretsInline === 0) return;
    const count = auth.secretsInline;
    auth.secretsInline = 0;
    void auditBestEffort({
      subject: auth.principal.subject,
      action: 'envelope',
      target: stream.prefixes.join(','),
      outcome: 'ok',
      detail: `watch stream ${stream.id}: ${count} sealed secret value(s) delivered inline`,
    });
  };
  let auditTimer: TimerHandle | undefined;
  const scheduleInlineAudit = (): void => {
    auditTimer = options.clock.setTimeout(() => {
      for (const [stream, auth] of streams) auditInline(stream, auth);
      scheduleInlineAudit();
    }, INLINE_AUDIT_INTERVAL_MS);
  };
  scheduleInlineAudit();

  const scheduleExpiry = (stream: WatchStream, auth: StreamAuth): void => {
    auth.expiry?.cancel();
    auth.expiry = undefined;
    if (auth.expiresAt === undefined) return;
    auth.expiry = options.clock.setTimeout(
      () => stream.end(GrpcStatus.UNAUTHENTICATED, 'The credential expired; reconnect with a fresh token.', 'expired'),
      Math.max(0, auth.expiresAt - options.clock.now()),
    );
  };

  const onEnd = (stream: WatchStream, reason: EndReason): void => {
    const auth = streams.get(stream);
    auth?.expiry?.cancel();
    if (auth) {
      auditInline(stream, auth);
      const left = (perPod.get(auth.principal.podKey) ?? 1) - 1;
      if (left > 0) perPod.set(auth.principal.podKey, left);
      else perPod.delete(auth.principal.podKey);
    }
    if (streams.delete(stream)) metrics.watchers.dec();
    if (reason !== 'cancelled') metrics.watchEnded.inc({ reason });
    logger.info({ stream: stream.id, subject: stream.subject, reason }, 'watch stream ended');
  };

  /**
   * The caller's principal. A refusal (no token, an unknown or expired one) is
   * audited like REST's 401s: aggregated per source address and reason, one
   * row at once and a count when the window ends, so a misconfigured fleet
   * cannot flood the log. The reason is the server's own message, which
   * never quotes the token.
   */
  const authenticate = async (call: grpc.ServerWritableStream<unknown, Buffer>, prefixes: readonly string[]): Promise<Principal> => {
    const authorization = call.metadata.get('authorization')[0];
    try {
      return await options.authenticator.authenticate(typeof authorization === 'string' ? authorization : undefined);
    } catch (err) {
      const refusal = toAppError(err);
      metrics.watchRefused.inc({ reason: 'unauthenticated' });
      await options.refusals.record({
        subject: UNAUTHENTICATED_SUBJECT,
        action: 'denied',
        target: prefixes.join(',').slice(0, REFUSED_TARGET_MAX_CHARS),
        outcome: 'denied',
        detail: `watch ${refusal.code} from ${peerHost(call.getPeer())}: ${refusal.message}`,
      });
      throw err;
    }
  };

  const handler = (call: grpc.ServerWritableStream<unknown, Buffer>): void => {
    const fail = (err: unknown): void => {
      const appError = toAppError(err);
      call.emit('error', { code: appError.grpcStatus, details: appError.message });
    };
    if (closing) {
      fail(new AppError('unavailable', 'The server is shutting down; reconnect to another replica.'));
      return;
    }
    let opened: WatchStream | undefined;
    void (async () => {
      const request = watchRequestFromWire(call.request as Parameters<typeof watchRequestFromWire>[0]);
      const principal = await authenticate(call, request.prefixes);
      // Per pod, not per service account: every replica of a Deployment shares one.
      try {
        options.openLimiter.take(principal.podKey);
      } catch (err) {
        metrics.watchRefused.inc({ reason: 'rate' });
        throw new AppError('rate_limited', `Too many Watch opens from this pod; ${toAppError(err).message}`);
      }
      if ((perPod.get(principal.podKey) ?? 0) >= options.maxStreamsPerPod) {
        metrics.watchRefused.inc({ reason: 'streams' });
        throw new AppError('resource_exhausted', `This pod already has ${options.maxStreamsPerPod} open Watch streams (--max-watch-streams-per-pod); close one first.`);
      }
      if (request.prefixes.length === 0) throw new AppError('invalid_argument', 'A watch needs at least one prefix.');
      const prefixes = request.prefixes.map((p) => validatePrefix(p));
      const policy = options.policy();
      const denied = prefixes.filter((p) => !policy.allows(principal.identity, 'read', p));
      if (denied.length > 0) {
        await options.refusals.record({ subject: principal.subject, action: 'denied', target: denied.join(','), outcome: 'denied', detail: 'watch' });
        throw new AppError('permission_denied', `${principal.subject} may not read ${denied.join(', ')}.`);
      }
      const auth: StreamAuth = { principal, expiresAt: principal.expiresAt, secretsInline: 0 };
      const stream = new WatchStream({
        id: nextId++,
        subject: principal.subject,
        prefixes,
        start: request.start ?? { kind: 'now' },
        environments: controlPlane.environments,
        log,
        bound: options.bound,
        heartbeatInterval: options.heartbeatInterval,
        replayPage: options.replayPage,
        onQueueDepth: (depth) => {
          if (depth > highWater) {
            highWater = depth;
            metrics.watchBufferHighWater.set(highWater);
          }
        },
        onSent: () => metrics.eventsSent.inc(),
        onDelivered: (event) => {
          if (event.kind === 'secret' && (event.inlineLayers ?? 0) > 0) auth.secretsInline += 1;
        },
        onEnd,
        sink: {
          write: (bytes) => call.write(bytes),
          once: (event, listener) => call.once(event, listener),
          finish: (code, details) => {
            if (code === GrpcStatus.OK) call.end();
            else call.emit('error', { code, details });
          },
        },
      });
      opened = stream;
      // Subscribe before reading the current revision: nothing committed in between is missed.
      streams.set(stream, auth);
      perPod.set(principal.podKey, (perPod.get(principal.podKey) ?? 0) + 1);
      metrics.watchers.inc();
      call.on('cancelled', () => stream.end(GrpcStatus.CANCELLED, 'cancelled by the client', 'cancelled'));
      // The client may have gone while we authenticated; 'cancelled' will not fire again.
      if (call.cancelled) {
        stream.end(GrpcStatus.CANCELLED, 'cancelled by the client', 'cancelled');
        return;
      }
      // Shutdown began while we authenticated: close() did not see this stream.
      if (closing) {
        stream.end(GrpcStatus.UNAVAILABLE, 'The server is shutting down; reconnect.', 'shutdown');
        return;
      }
      scheduleExpiry(stream, auth);
      logger.info({ stream: stream.id, subject: principal.subject, prefixes, start: describeStart(request.start), agentId: request.agentId.slice(0, 128) }, 'watch stream opened');
      await auditBestEffort({ subject: principal.subject, action: 'watch', target: prefixes.join(','), outcome: 'ok' });
      // Each read is one snapshot with the compaction boundary: whatever happened during the audit write is seen.
      await stream.start();
    })().catch((err: unknown) => {
      const appError = toAppError(err);
      if (appError.httpStatus >= 500) logger.error({ code: appError.code, err: appError.message }, 'watch failed');
      else logger.info({ code: appError.code, subject: opened?.subject }, 'watch refused');
      if (opened) opened.end(appError.grpcStatus, appError.message, 'error');
      else fail(appError);
    });
  };

  return {
    definition: passThroughServiceDefinition(),
    implementation: { Watch: handler as grpc.handleServerStreamingCall<unknown, Buffer> },
    recheck(policy) {
      for (const [stream, auth] of [...streams]) {
        const { principal } = auth;
        const token = principal.tokenSha256 === undefined ? undefined : policy.doc.tokens.get(principal.tokenSha256);
        if (principal.via === 'token' && (!token || token.subject !== principal.subject)) {
          stream.end(GrpcStatus.UNAUTHENTICATED, 'The token was revoked.', 'permission');
          continue;
        }
        // A reload that tightens (or lifts) a static token's `expires` applies to its open streams.
        if (principal.via === 'token' && token && token.expiresAt !== auth.expiresAt) {
          auth.expiresAt = token.expiresAt;
          if (token.expiresAt !== undefined && token.expiresAt <= options.clock.now()) {
            stream.end(GrpcStatus.UNAUTHENTICATED, 'The token has expired.', 'expired');
            continue;
          }
          scheduleExpiry(stream, auth);
        }
        const denied = stream.prefixes.filter((p) => !policy.allows(principal.identity, 'read', p));
        if (denied.length > 0) stream.end(GrpcStatus.PERMISSION_DENIED, `Access to ${denied.join(', ')} was revoked.`, 'permission');
      }
    },
    publishTo(events, audience) {
      fanOut.publish(events, audience);
    },
    delivered: () => fanOut.idle(),
    close() {
      closing = true;
      auditTimer?.cancel();
      heartbeats.stop();
      fanOut.close();
      unsubscribe();
      unsubscribeLost();
      for (const stream of [...streams.keys()]) stream.end(GrpcStatus.UNAVAILABLE, 'The server is shutting down; reconnect.', 'shutdown');
    },
    get openStreams() {
      return streams.size;
    },
  };
}
