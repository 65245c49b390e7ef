/**
 * The gRPC Watch service: authenticates each call from its metadata, refuses
 * (never filters) prefixes the caller may not read, and fans every committed
 * event out to the matching streams after encoding it once. Streams are
 * re-checked when the policy changes and ended when their credential expires.
 */
import type * as grpc from '@grpc/grpc-js';
import { AppError, GrpcStatus, toAppError } from '../../shared/errors.ts';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { Logger } from '../../shared/logger.ts';
import { validatePrefix } from '../../shared/paths.ts';
import { watchRequestFromWire } from '../../shared/watch-proto.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { AuditEntry, ControlPlane, LogEvent } from '../control-plane.ts';
import type { Authenticator, Principal } from '../auth/authenticator.ts';
import type { Policy } from '../auth/policy.ts';
import type { ServerMetrics } from '../metrics.ts';
import { encodeEvent, passThroughServiceDefinition } from './event-codec.ts';
import { WatchStream, type EndReason } from './watch-stream.ts';

export interface WatchServiceOptions {
  readonly controlPlane: ControlPlane;
  readonly authenticator: Authenticator;
  readonly policy: () => Policy;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: ServerMetrics;
  readonly heartbeatInterval: Milliseconds;
  readonly bound: number;
}

export interface WatchService {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  /** Re-checks every open stream against a new policy. */
  recheck(policy: Policy): void;
  /** Ends every stream with UNAVAILABLE (shutdown) and stops the fan-out. */
  close(): void;
  readonly openStreams: number;
}

interface StreamAuth {
  readonly principal: Principal;
  expiry?: TimerHandle;
}

export async function createWatchService(options: WatchServiceOptions): Promise<WatchService> {
  const { controlPlane, metrics, logger } = options;
  const streams = new Map<WatchStream, StreamAuth>();
  let latestRevision = await controlPlane.currentRevision();
  let nextId = 1;
  let highWater = 0;
  let closing = false;

  const unsubscribe = controlPlane.onCommitted((events: readonly LogEvent[]) => {
    for (const event of events) {
      latestRevision = Math.max(latestRevision, event.revision);
      metrics.events.inc({ type: event.type });
      const encoded = encodeEvent(event);
      for (const stream of streams.keys()) stream.offer(encoded);
    }
  });
  // This replica could not deliver events that retention compacted first (a
  // PostgreSQL replica cut off from the database for too long): its streams
  // would silently miss them, so end them; clients resume and get ResyncRequired.
  const unsubscribeLost =
    controlPlane.onEventsLost?.((lost) => {
      latestRevision = Math.max(latestRevision, lost.compactedThrough);
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

  const onEnd = (stream: WatchStream, reason: EndReason): void => {
    const auth = streams.get(stream);
    auth?.expiry?.cancel();
    if (streams.delete(stream)) metrics.watchers.dec();
    if (reason !== 'cancelled') metrics.watchEnded.inc({ reason });
    logger.info({ stream: stream.id, subject: stream.subject, reason }, 'watch stream ended');
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
      const authorization = call.metadata.get('authorization')[0];
      const principal = await options.authenticator.authenticate(typeof authorization === 'string' ? authorization : undefined);
      if (request.prefixes.length === 0) throw new AppError('invalid_argument', 'A watch needs at least one prefix.');
      const prefixes = request.prefixes.map((p) => validatePrefix(p));
      const policy = options.policy();
      const denied = prefixes.filter((p) => !policy.allows(principal.identity, 'read', p));
      if (denied.length > 0) {
        await auditBestEffort({ subject: principal.subject, action: 'denied', target: denied.join(','), outcome: 'denied', detail: 'watch' });
        throw new AppError('permission_denied', `${principal.subject} may not read ${denied.join(', ')}.`);
      }
      const stream = new WatchStream({
        id: nextId++,
        subject: principal.subject,
        prefixes,
        sinceRevision: request.sinceRevision,
        bound: options.bound,
        heartbeatInterval: options.heartbeatInterval,
        clock: options.clock,
        latestRevision: () => latestRevision,
        onQueueDepth: (depth) => {
          if (depth > highWater) {
            highWater = depth;
            metrics.watchBufferHighWater.set(highWater);
          }
        },
        onSent: () => metrics.eventsSent.inc(),
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
      const auth: StreamAuth = { principal };
      streams.set(stream, auth);
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
      if (principal.expiresAt !== undefined) {
        auth.expiry = options.clock.setTimeout(
          () => stream.end(GrpcStatus.UNAUTHENTICATED, 'The credential expired; reconnect with a fresh token.', 'expired'),
          Math.max(0, principal.expiresAt - options.clock.now()),
        );
      }
      const [current, oldest] = await Promise.all([controlPlane.currentRevision(), controlPlane.oldestRetainedRevision()]);
      if (request.sinceRevision > current) {
        stream.end(GrpcStatus.INVALID_ARGUMENT, `since_revision ${request.sinceRevision} is in the future; the current revision is ${current}.`, 'error');
        return;
      }
      logger.info({ stream: stream.id, subject: principal.subject, prefixes, since: request.sinceRevision, agentId: request.agentId.slice(0, 128) }, 'watch stream opened');
      await auditBestEffort({ subject: principal.subject, action: 'watch', target: prefixes.join(','), outcome: 'ok' });
      await stream.start(controlPlane, current, oldest);
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
        const denied = stream.prefixes.filter((p) => !policy.allows(principal.identity, 'read', p));
        if (denied.length > 0) stream.end(GrpcStatus.PERMISSION_DENIED, `Access to ${denied.join(', ')} was revoked.`, 'permission');
      }
    },
    close() {
      closing = true;
      unsubscribe();
      unsubscribeLost();
      for (const stream of [...streams.keys()]) stream.end(GrpcStatus.UNAVAILABLE, 'The server is shutting down; reconnect.', 'shutdown');
    },
    get openStreams() {
      return streams.size;
    },
  };
}
