/**
 * What scenarios share within one run: the profile, a seeded control plane
 * (started once, lazily) and a warm agent for the cached-read family, plus
 * cleanup of everything started. Scenarios that kill or reconfigure
 * processes start their own.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { LOAD_CORE, SUT_CORE } from './proc.ts';
import { CHANGE_SET_MAX_CHANGES } from '../../src/shared/protocol.ts';
import { CLI, keyName, ServerClient, startAgent, startServer, valueFor, waitReady, type AgentHandle, type ServerHandle } from './stack.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
import type { Profile } from './types.ts';

export const ITEMS_NS = 'bench/items';
export const VALUE_BYTES = 1024;
/** Concurrent reads while warming an agent's cache. */
const WARM_CONCURRENCY = 16;
const SEED_DEADLINE_MS = 240_000;
/**
 * The shared control plane keeps this many events, not its default 100k:
 * with 100k seeded items retained, opening a Watch stream blocked the
 * server's event loop for ~11 s (event-loop lag max 11.2 s, 2026-11-30), so
 * every agent's stream went silent and its fills answered 504. No scenario
 * resumes across more than a few thousand events.
 */
const BASE_RETAIN_EVENTS = 20_000;

export interface Base {
  readonly server: ServerHandle;
  readonly client: ServerClient;
  /** Items `bench/items/k000000…` seeded so far. */
  seeded: number;
}

export interface WarmAgent {
  readonly agent: AgentHandle;
  /** False when the agent runs the TypeScript source (--smoke, or the compile failed). */
  readonly compiled: boolean;
  readonly keys: number;
  /** Raw-format ETag per request path (for If-None-Match). */
  readonly etags: ReadonlyMap<string, string>;
  readonly paths: readonly string[];
}

export function itemPath(namespace: string, i: number): string {
  return `/v1/items/${namespace}/${keyName(i)}?format=raw`;
}

export class Context {
  readonly profile: Profile;
  readonly log: (msg: string) => void;
  private base?: Promise<Base>;
  private warm?: Promise<WarmAgent>;
  private compiled?: Promise<{ cli: string; compiled: boolean }>;
  private readonly cleanups: Array<() => Promise<void>> = [];

  constructor(profile: Profile, log: (msg: string) => void) {
    this.profile = profile;
    this.log = log;
  }

  /** Wall-clock end of the suite's budget (ms since the epoch), set by the runner. */
  deadline = Number.POSITIVE_INFINITY;

  secondsLeft(): number {
    return (this.deadline - Date.now()) / 1000;
  }

  onCleanup(fn: () => Promise<void>): void {
    this.cleanups.push(fn);
  }

  /** The shared control plane with at least `count` items under bench/items. */
  async baseWith(count: number): Promise<Base> {
    this.base ??= (async () => {
      // The control plane sits on the load core: it is idle while the agent serves from cache, and warming is faster.
      const server = await startServer(LOAD_CORE, ['--retain-events', String(BASE_RETAIN_EVENTS)]);
      const client = new ServerClient(server);
      this.onCleanup(async () => {
        await client.close();
        await server.stop();
      });
      return { server, client, seeded: 0 };
    })();
    const base = await this.base;
    if (base.seeded < count) {
      const started = Date.now();
      this.log(`seeding ${count - base.seeded} items of ${VALUE_BYTES} B`);
      await seedRange(base.client, ITEMS_NS, base.seeded, count, SEED_DEADLINE_MS);
      base.seeded = count;
      this.log(`seeded in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
    return base;
  }

  /**
   * One agent on the SUT core with every bench/items key read once: the bin
   * as installed (compiled: issue 15's targets are measured that way, and
   * the source runs with Node's TypeScript loader beside it, which a pod
   * never does), except in --smoke, which keeps the suite's own test quick
   * and runs the source.
   */
  warmAgent(): Promise<WarmAgent> {
    this.warm ??= (async () => {
      const keys = this.profile.keys;
      const base = await this.baseWith(keys);
      const { cli, compiled } = this.profile.name === 'smoke' ? { cli: CLI, compiled: false } : await this.compiledCli();
      const agent = await startAgent(base.server, { cli, core: SUT_CORE, prefixes: ['bench'], args: ['--cache-ttl', '1h'] });
      this.onCleanup(() => agent.stop());
      await waitReady(agent.adminUrl);
      const paths = Array.from({ length: keys }, (_, i) => itemPath(ITEMS_NS, i));
      const started = Date.now();
      const etags = await readAll(agent.socketPath, paths);
      this.log(`warmed the agent with ${keys} keys in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return { agent, compiled, keys, etags, paths };
    })();
    return this.warm;
  }

  /**
   * The CLI compiled to JavaScript (as the package ships it, without Node's
   * type stripping, which adds about 17 MiB RSS and load time), built once
   * into a temp dir. Falls back to the source CLI when the build fails.
   */
  compiledCli(): Promise<{ cli: string; compiled: boolean }> {
    this.compiled ??= (async () => {
      // Inside the repo, so the compiled code resolves the project's node_modules.
      // One per run: two bench runs at once (memory next to pod-limit) must not delete each other's build.
      const out = join(ROOT, 'bench', `.build-${process.pid}`);
      await rm(out, { recursive: true, force: true });
      this.onCleanup(() => rm(out, { recursive: true, force: true }));
      const started = Date.now();
      const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
      // dist/ below a copy of package.json, as the package ships: the CLI reads its version from ../../package.json.
      const dist = join(out, 'dist');
      const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.json'), '--outDir', dist, '--declaration', 'false'], { encoding: 'utf8', timeout: 120_000 });
      const cli = join(dist, 'cli', 'main.js');
      if (!existsSync(cli)) {
        this.log(`compiling the CLI failed (${r.stdout.slice(0, 300)}); measuring the TypeScript source instead`);
        return { cli: CLI, compiled: false };
      }
      // Non-TypeScript assets (proto, SQL, JSON), as `npm run build` copies them.
      cpSync(join(ROOT, 'src'), dist, { recursive: true, filter: (f) => !f.endsWith('.ts') });
      cpSync(join(ROOT, 'package.json'), join(out, 'package.json'));
      this.log(`compiled the CLI to JavaScript in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return { cli, compiled: true };
    })();
    return this.compiled;
  }

  /** Stops everything shared (after a scenario overran its limit); the next scenario starts afresh. */
  async reset(): Promise<void> {
    await this.close();
    this.base = undefined;
    this.warm = undefined;
    this.compiled = undefined;
  }

  async close(): Promise<void> {
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        this.log(`cleanup failed: ${String(err)}`);
      }
    }
  }
}

/** Items per change set while seeding: the server's bound on a set. */
const SEED_BATCH = CHANGE_SET_MAX_CHANGES;
/** Change sets in flight while seeding (the server serialises writes in its store anyway). */
const SEED_BATCHES_IN_FLIGHT = 2;

/** Writes items `<namespace>/k<from>` … `k<to - 1>` with 1 KiB values, SEED_BATCH per change set. */
export async function seedRange(client: ServerClient, namespace: string, from: number, to: number, deadlineMs: number): Promise<void> {
  let next = from;
  const until = Date.now() + deadlineMs;
  const worker = async (): Promise<void> => {
    while (next < to) {
      if (Date.now() > until) throw new Error(`seeding ${namespace} did not finish within ${deadlineMs} ms`);
      const start = next;
      next = Math.min(to, start + SEED_BATCH);
      const items = Array.from({ length: next - start }, (_, k) => ({ path: `${namespace}/${keyName(start + k)}`, value: valueFor(start + k, 0, VALUE_BYTES) }));
      await client.putBatch(items);
    }
  };
  await Promise.all(Array.from({ length: SEED_BATCHES_IN_FLIGHT }, worker));
}

/** GETs every path once over the socket (WARM_CONCURRENCY at a time); returns each ETag. Throws on a non-200. */
export async function readAll(socketPath: string, paths: readonly string[], concurrency = WARM_CONCURRENCY): Promise<Map<string, string>> {
  const client = new Client('http://localhost', { socketPath, pipelining: concurrency });
  const etags = new Map<string, string>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const path = paths[next++] as string;
      const res = await client.request({ method: 'GET', path, headersTimeout: 30_000 });
      await res.body.dump();
      if (res.statusCode !== 200) throw new Error(`warming ${path}: ${res.statusCode}`);
      etags.set(path, String(res.headers.etag));
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    await client.close();
  }
  return etags;
}
