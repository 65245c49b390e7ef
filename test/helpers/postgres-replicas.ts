/**
 * Real `config-sidecar server` replicas on one PostgreSQL database, and the
 * bookkeeping the replica tests share: writers that record what was
 * acknowledged, and watch collectors that record every revision they saw.
 */
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import type { WatchEvent } from '../../src/shared/watch-proto.ts';
import { http, openWatch, removeDir, startServerProcess, type HttpResult, type ServerProcess, type WatchHandle } from './server-process.ts';

export interface ReplicaSet {
  readonly kek: string;
  readonly rootToken: string;
  start(extraArgs?: readonly string[]): Promise<ServerProcess>;
}

/** Replicas sharing `url`, one KEK and one root token; each is stopped and its temp dir removed after the test. */
export function replicaSet(t: TestContext, url: string): ReplicaSet {
  const kek = randomBytes(32).toString('base64');
  const rootToken = `root-${randomBytes(16).toString('hex')}`;
  return {
    kek,
    rootToken,
    async start(extraArgs = []) {
      const server = await startServerProcess({ kek, rootToken, args: extraArgs, env: { CONFIG_SIDECAR_DATABASE_URL: url } });
      t.after(async () => {
        await server.stop('SIGKILL');
        await removeDir(server.dataDir);
      });
      return server;
    },
  };
}

export function putItem(server: ServerProcess, token: string, path: string, value: unknown): Promise<HttpResult> {
  return http(server.httpUrl, 'PUT', `/v1/items/${path}`, { token, body: { kind: 'config', value } });
}

/** A watch that records the revision of every item/key event, asserting nothing until asked. */
export interface Collector {
  readonly watch: WatchHandle;
  readonly revisions: number[];
  /** Resolves once an event with revision >= `revision` arrived. */
  reach(revision: number, timeoutMs?: number): Promise<void>;
}

const EVENT_TYPES = new Set(['itemChanged', 'itemDeleted', 'keyRotated']);

export async function collect(server: ServerProcess, token: string, prefixes: string[], sinceRevision = 0): Promise<Collector> {
  const watch = openWatch(server.grpcAddress, { prefixes, sinceRevision }, token);
  const first = await watch.next();
  if (first.type !== 'heartbeat') throw new Error(`the first watch message is ${first.type}, not a heartbeat`);
  const revisions: number[] = [];
  let waiter: { revision: number; resolve: () => void } | undefined;
  let failure: Error | undefined;
  const pump = async (): Promise<void> => {
    for (;;) {
      let event: WatchEvent;
      try {
        event = await watch.next(600_000);
      } catch (err) {
        failure = err as Error;
        return;
      }
      if (!EVENT_TYPES.has(event.type)) continue;
      revisions.push(event.revision);
      if (waiter && event.revision >= waiter.revision) {
        const w = waiter;
        waiter = undefined;
        w.resolve();
      }
    }
  };
  void pump();
  return {
    watch,
    revisions,
    reach(revision, timeoutMs = 20_000) {
      if (revisions.some((r) => r >= revision)) return Promise.resolve();
      if (failure) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`watch did not reach revision ${revision} in time; saw ${revisions.length} events, last ${revisions.at(-1)}`)),
          timeoutMs,
        );
        waiter = {
          revision,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
      });
    },
  };
}

/** `revisions` is strictly increasing by exactly 1 from `from` to `to`: every revision once, in order. */
export function contiguous(revisions: readonly number[], from: number, to: number): boolean {
  if (revisions.length !== to - from + 1) return false;
  return revisions.every((r, i) => r === from + i);
}
