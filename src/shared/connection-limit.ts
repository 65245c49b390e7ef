/**
 * Bounds the connections one listener holds, shedding the oldest connection
 * that has not sent a request yet instead of refusing the newcomer: a flood of
 * idle or slowloris connections cannot lock out clients that send their
 * request at once (a legitimate client is "pending" for a millisecond, an
 * attacker's connection for the whole headers timeout). Connections that have
 * been served (keep-alive) are never shed; when every connection is one, the
 * newcomer is refused. Unauthenticated time-to-first-request is bounded by
 * the listener's `headersTimeout` (checked every `CONNECTIONS_CHECK_MS`).
 */
import type { Server as NetServer, Socket } from 'node:net';
import type { Milliseconds } from './units.ts';

/** How often Node enforces headersTimeout/requestTimeout (its default is 30 s). */
export const CONNECTIONS_CHECK_MS: Milliseconds = 1_000;

export type ShedReason = 'oldest_pending' | 'full';

export interface ConnectionLimitOptions {
  readonly max: number;
  /**
   * The event that hands over a connection: 'connection' for plain HTTP;
   * 'secureConnection' for TLS, whose handshake is bounded by handshakeTimeout.
   */
  readonly event?: 'connection' | 'secureConnection';
  readonly onShed?: (reason: ShedReason) => void;
  /**
   * The listener calls `served(socket)` from its own request handler instead
   * of this module listening for 'request': a second 'request' listener makes
   * Node copy the listener array on every request (the agent's cached read).
   */
  readonly callerMarksServed?: boolean;
}

export interface ConnectionLimit {
  readonly open: number;
  readonly pending: number;
  /** Marks a connection served (it may no longer be shed); HTTP listeners do this on their 'request' event. */
  served(socket: Socket): void;
  /** True while a connection has not been served yet. */
  isPending(socket: Socket): boolean;
}

export function limitConnections(server: NetServer, options: ConnectionLimitOptions): ConnectionLimit {
  const pending = new Set<Socket>();
  let open = 0;
  server.on(options.event ?? 'connection', (socket: Socket) => {
    open += 1;
    socket.once('close', () => {
      open -= 1;
      pending.delete(socket);
    });
    if (open > options.max) {
      const oldest = pending.values().next().value;
      if (oldest === undefined) {
        socket.destroy();
        options.onShed?.('full');
        return;
      }
      pending.delete(oldest);
      oldest.destroy();
      options.onShed?.('oldest_pending');
    }
    pending.add(socket);
  });
  if (options.callerMarksServed !== true) {
    server.on('request', (req: { socket: Socket }) => {
      pending.delete(req.socket);
    });
  }
  return {
    get open() {
      return open;
    },
    get pending() {
      return pending.size;
    },
    served: (socket) => {
      // Keep-alive clients that have all been served leave the set empty: skip the hash lookup.
      if (pending.size !== 0) pending.delete(socket);
    },
    isPending: (socket) => pending.has(socket),
  };
}
