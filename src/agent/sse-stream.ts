/**
 * `GET /v1/watch`: Server-Sent Events of applied changes. Each event is
 * `event: changed|deleted|rotated|resync`, `id:` its revision and `data:` a
 * JSON object without the value. A `Last-Event-ID` resume replays the
 * applied-events ring, or sends an explicit `resync` when it cannot (the hub
 * decides; there is never a silent gap). Writes respect back-pressure: the
 * stream pulls the next event only once the socket drained, and the hub's
 * bounded queue turns a reader that falls too far behind into a `resync`.
 */
import type { ServerResponse } from 'node:http';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { namespaceMatchesAny, namespaceMatchesPrefix } from '../shared/paths.ts';
import type { SseEventData } from '../shared/protocol.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { AppliedEvent, AppliedEventsHub } from './applied-events.ts';

/** A comment line this often keeps proxies and idle timers from closing the stream. */
export const SSE_KEEPALIVE_MS: Milliseconds = 15_000;
/** Tells EventSource clients how long to wait before reconnecting. */
export const SSE_RETRY_MS: Milliseconds = 1_000;

export function formatSseEvent(event: AppliedEvent, prefix: string): string {
  const data: SseEventData & { env?: string } = {
    namespace: event.type === 'resync' && event.namespace === '' ? prefix : event.namespace,
    ...(event.name !== undefined ? { name: event.name } : {}),
    ...(event.version !== undefined ? { version: event.version } : {}),
    revision: event.revision,
    ...(event.env ? { env: event.env } : {}),
    ...(event.setRevision !== undefined ? { setRevision: event.setRevision, ...(event.endsSet ? { endsSet: true } : {}) } : {}),
  };
  // A set's members all carry the set's last revision as id, so a Last-Event-ID resume never lands inside a set.
  return `event: ${event.type}\nid: ${event.setRevision ?? event.revision}\ndata: ${JSON.stringify(data)}\n\n`;
}

export interface SseOptions {
  readonly hub: AppliedEventsHub;
  readonly prefix: string;
  readonly allowedPrefixes: () => readonly string[];
  readonly sinceRevision: number | undefined;
  readonly clock: Clock;
  readonly onOpen?: () => void;
  readonly onClose?: () => void;
}

export async function serveSse(res: ServerResponse, options: SseOptions): Promise<void> {
  const controller = new AbortController();
  const { prefix } = options;
  const subscription = options.hub.subscribe({
    signal: controller.signal,
    sinceRevision: options.sinceRevision,
    filter: (event) =>
      prefix === '' ? namespaceMatchesAny(event.namespace, options.allowedPrefixes()) : namespaceMatchesPrefix(event.namespace, prefix),
  });
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(`retry: ${SSE_RETRY_MS}\n: applied revision ${options.hub.latestRevision}\n\n`);
  options.onOpen?.();
  let keepalive: TimerHandle | undefined;
  const arm = (): void => {
    keepalive?.cancel();
    keepalive = options.clock.setTimeout(() => {
      if (!res.destroyed) res.write(': keepalive\n\n');
      arm();
    }, SSE_KEEPALIVE_MS);
  };
  arm();
  res.once('close', () => {
    keepalive?.cancel();
    controller.abort();
  });
  try {
    for await (const event of subscription) {
      if (res.destroyed) break;
      let chunk = formatSseEvent(event, prefix);
      // The rest of a change set is already queued (the applier publishes it in one step): one write for all of it.
      const setRevision = event.setRevision;
      if (setRevision !== undefined) {
        for (let member = subscription.takeQueued((e) => e.setRevision === setRevision); member; member = subscription.takeQueued((e) => e.setRevision === setRevision)) {
          chunk += formatSseEvent(member, prefix);
        }
      }
      if (!res.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
  } finally {
    keepalive?.cancel();
    subscription.close();
    options.onClose?.();
    if (!res.writableEnded) res.end();
  }
}
