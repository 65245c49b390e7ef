/**
 * The gRPC listener: our own net.Server whose accepted sockets are injected
 * into grpc-js (Server.createConnectionInjector), so the same per-listener
 * budget as REST applies (shared/connection-limit.ts). A connection is
 * "pending" until one of our handlers gets its first call; past the limit
 * the oldest pending one is shed, and a connection that starts no call within
 * the first-call timeout is closed, so idle or handshake-only floods cannot hold the slots
 * agents need. TLS is done by grpc-js on the injected socket, so certificate
 * reloads (tls-files.ts) keep working.
 *
 * Its HTTP/2 settings are sized for what agents do: one long stream of small
 * server messages and one small request per connection (GRPC_HTTP2_SETTINGS).
 */
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import type * as grpc from '@grpc/grpc-js';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { limitConnections } from '../shared/connection-limit.ts';
import type { Milliseconds } from '../shared/units.ts';

/**
 * HTTP/2 settings the server announces. No header compression table (agents
 * send one request's headers per connection, so a table would only hold a
 * copy of each agent's token for the connection's life), a receive window and
 * header list sized for small requests (a Watch or Report message, a
 * service-account JWT). What the server sends is governed by the agent's
 * settings.
 */
export const GRPC_HTTP2_SETTINGS = {
  headerTableSize: 0,
  initialWindowSize: 16 * 1024,
  maxHeaderListSize: 16 * 1024,
} as const;

export type GrpcShedReason = 'oldest_pending' | 'full' | 'first_call_timeout';

export interface GrpcListenerOptions {
  readonly grpcServer: grpc.Server;
  readonly credentials: grpc.ServerCredentials;
  readonly maxConnections: number;
  readonly firstCallTimeout: Milliseconds;
  readonly clock: Clock;
  readonly onShed?: (reason: GrpcShedReason) => void;
}

export interface GrpcListener {
  readonly server: NetServer;
  /** Stops accepting and closes connections that never started a call; grpc-js closes the rest. */
  close(): void;
}

/** The key grpc-js's call.getPeer() gives for a connection. */
const peerKey = (address: string | undefined, port: number | undefined): string => (port ? `${address}:${port}` : String(address));

export interface CallTracker {
  /** Wraps a service implementation so each call it handles marks its connection served. */
  track<T extends object>(implementation: T): T;
  onCall(listener: (peer: string) => void): void;
}

/**
 * Marks a connection served when one of our handlers gets a call on it. The
 * handlers are wrapped rather than a grpc-js server interceptor added: an
 * interceptor changes how Watch streams end and resume (seen as a replayed
 * event in the replica failover test); a call to an unknown method does not
 * count as served.
 */
export function createCallTracker(): CallTracker {
  let listener: (peer: string) => void = () => {};
  return {
    track: <T extends object>(implementation: T): T => {
      const wrapped: Record<string, unknown> = {};
      for (const [name, handler] of Object.entries(implementation) as Array<[string, unknown]>) {
        wrapped[name] =
          typeof handler === 'function'
            ? (call: { getPeer(): string }, ...rest: unknown[]): unknown => {
                listener(call.getPeer());
                return (handler as (...args: unknown[]) => unknown).call(implementation, call, ...rest);
              }
            : handler;
      }
      return wrapped as T;
    },
    onCall: (l) => {
      listener = l;
    },
  };
}

/**
 * grpc-js has no option for HTTP/2 settings beyond max concurrent streams;
 * its server passes one options object to every http2 server it creates
 * (from createConnectionInjector too), so the settings go there. A grpc-js
 * without that object gets its defaults; the listener test reads the
 * settings a client receives, so that would not go unnoticed.
 */
function applyHttp2Settings(server: grpc.Server): void {
  const internal = server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> } };
  if (typeof internal.commonServerOptions !== 'object') return;
  internal.commonServerOptions.settings = { ...internal.commonServerOptions.settings, ...GRPC_HTTP2_SETTINGS };
}

export function createGrpcListener(options: GrpcListenerOptions, tracker: CallTracker): GrpcListener {
  applyHttp2Settings(options.grpcServer);
  const injector = options.grpcServer.createConnectionInjector(options.credentials);
  const server = createServer();
  const waiting = new Map<string, { readonly socket: Socket; readonly timer: TimerHandle }>();
  const limit = limitConnections(server, { max: options.maxConnections, onShed: options.onShed });
  const settle = (key: string): void => {
    const entry = waiting.get(key);
    if (!entry) return;
    waiting.delete(key);
    entry.timer.cancel();
    limit.served(entry.socket);
  };
  tracker.onCall(settle);
  // Registered after limitConnections: a newcomer it refused is already destroyed here.
  server.on('connection', (socket: Socket) => {
    socket.on('error', () => {});
    if (socket.destroyed) return;
    const key = peerKey(socket.remoteAddress, socket.remotePort);
    const timer = options.clock.setTimeout(() => {
      if (!limit.isPending(socket)) return;
      waiting.delete(key);
      socket.destroy();
      options.onShed?.('first_call_timeout');
    }, options.firstCallTimeout);
    waiting.set(key, { socket, timer });
    socket.once('close', () => {
      if (waiting.get(key)?.socket === socket) {
        waiting.delete(key);
        timer.cancel();
      }
    });
    injector.injectConnection(socket);
  });
  return {
    server,
    close: () => {
      server.close();
      for (const { socket, timer } of waiting.values()) {
        timer.cancel();
        socket.destroy();
      }
      waiting.clear();
    },
  };
}
