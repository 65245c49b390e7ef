/** A minimal Server-Sent Events reader over the agent's Unix socket, timestamping each event with hrtime. */
import { request, type ClientRequest } from 'node:http';

export interface TimedEvent {
  readonly event: string;
  readonly id: string;
  readonly data: { namespace?: string; name?: string; version?: number; revision?: number };
  readonly atNs: bigint;
}

export interface SseWatcher {
  readonly opened: Promise<void>;
  /** Called for every event as it arrives. */
  onEvent(fn: (e: TimedEvent) => void): void;
  close(): void;
}

export function watchSse(socketPath: string, prefix: string): SseWatcher {
  const listeners: Array<(e: TimedEvent) => void> = [];
  let opened!: () => void;
  let failed!: (err: Error) => void;
  const openedP = new Promise<void>((resolve, reject) => {
    opened = resolve;
    failed = reject;
  });
  let buffer = '';
  const req: ClientRequest = request({ socketPath, path: `/v1/watch?prefix=${encodeURIComponent(prefix)}`, method: 'GET' }, (res) => {
    if (res.statusCode !== 200) {
      failed(new Error(`SSE ${prefix}: HTTP ${res.statusCode}`));
      // A refused watcher lets its connection go (as a client backing off on 429 does), not idle in keep-alive.
      res.resume();
      req.destroy();
      return;
    }
    opened();
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      const atNs = process.hrtime.bigint();
      buffer += chunk;
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const fields: Record<string, string> = {};
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const i = line.indexOf(':');
          if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1).trimStart();
        }
        if (fields.data === undefined) continue;
        let data: TimedEvent['data'];
        try {
          data = JSON.parse(fields.data) as TimedEvent['data'];
        } catch {
          continue;
        }
        const e = { event: fields.event ?? 'message', id: fields.id ?? '', data, atNs };
        for (const fn of listeners) fn(e);
      }
    });
  });
  req.on('error', (err) => failed(err));
  req.end();
  return {
    opened: openedP,
    onEvent(fn) {
      listeners.push(fn);
    },
    close() {
      req.destroy();
    },
  };
}
