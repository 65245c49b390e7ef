/**
 * The world of the freshness simulation suite (test/freshness-simulation.test.ts):
 * an in-memory control plane that keeps the v1.1 watch contract (positions,
 * store identity, digests, bookmarks, compaction, inline layers, restores and
 * failover to a lagging replica) and an agent made of the real ValueCache,
 * EventApplier, DekStore, applied-events hub and files publisher (the real
 * FileRenderer and its formats, publishing through an in-memory writer, no
 * chokidar guard) on a ManualClock, and an SSE client that follows the hub as
 * /v1/watch does.
 * Every step is driven by the test's scheduler; nothing here waits on time.
 */
import { ManualClock } from '../../src/shared/clock.ts';
import { generateTransportKeyPair } from '../../src/shared/crypto.ts';
import { AppError } from '../../src/shared/errors.ts';
import { contributingLayers, layersEtag, mergePlaintexts } from '../../src/shared/item-layers.ts';
import { environmentChain } from '../../src/shared/merge.ts';
import { createLogger } from '../../src/shared/logger.ts';
import type { ItemRef } from '../../src/shared/paths.ts';
import type { LogPosition, StartFrom, WatchEvent } from '../../src/shared/watch-proto.ts';
import { createAgentMetrics, type AgentMetrics } from '../../src/agent/agent-metrics.ts';
import { AppliedEventsHub, type AppliedEvent } from '../../src/agent/applied-events.ts';
import { DekStore } from '../../src/agent/dek-store.ts';
import { EventApplier } from '../../src/agent/event-applier.ts';
import type { Upstream } from '../../src/agent/upstream.ts';
import { release, ValueCache, variantKey, type LoadedValue, type ReadResult, type VariantMemo } from '../../src/agent/value-cache.ts';
import type { FileContent, FilePublisher, PublishResult } from '../../src/agent/files/atomic-writer.ts';
import { parseFileSpecs } from '../../src/agent/files/file-spec-schema.ts';
import { FileRenderer, RETRY_CAP_MS, type AppliedEventSource, type FilesValueSource } from '../../src/agent/files/render-files.ts';
import { MetricsRegistry as Registry } from '../../src/shared/metrics/registry.ts';
import { SealedKeyring } from './sealed-keyring.ts';

export const PREFIX = 'ns';
export const ITEMS: readonly ItemRef[] = [
  { namespace: 'ns', name: 'a' },
  { namespace: 'ns', name: 'b' },
  { namespace: 'other', name: 'c' }, // outside the agent's prefix: filtered, covered by bookmarks
];
export const ENVIRONMENTS = ['base', 'staging', 'prod'] as const;
/** (item, env) pairs an app reads; the files publisher renders a/prod (the agent's --env) and b/staging (the item's own env). */
export const READS: ReadonlyArray<{ ref: ItemRef; env: string }> = [
  { ref: ITEMS[0] as ItemRef, env: 'prod' },
  { ref: ITEMS[0] as ItemRef, env: 'staging' },
  { ref: ITEMS[1] as ItemRef, env: 'prod' },
  { ref: ITEMS[1] as ItemRef, env: 'staging' },
];
export const FILES: ReadonlyArray<{ ref: ItemRef; env: string; path: string }> = [
  { ref: ITEMS[0] as ItemRef, env: 'prod', path: 'a.json' },
  { ref: ITEMS[1] as ItemRef, env: 'staging', path: 'b.json' },
];
const FILE_SPECS = parseFileSpecs([
  { path: 'a.json', items: ['ns/a'], format: 'raw' },
  { path: 'b.json', items: [{ item: 'ns/b', env: 'staging' }], format: 'raw' },
]);
export const JITTER_MS = 500;
export const TTL_MS = 20_000;

export interface Write {
  readonly id: number;
  readonly revision: number;
  readonly digest: string;
  readonly ref: ItemRef;
  readonly env: string;
  readonly inline: boolean;
}

/** One history of a store: a restore or a failover starts a new one from a prefix of its parent. */
export interface Epoch {
  readonly id: number;
  readonly storeId: string;
  readonly parent: Epoch | undefined;
  readonly log: Write[];
  compactedThrough: number;
  readonly keyring: SealedKeyring;
}

interface Conn {
  readonly epoch: Epoch;
  readonly queue: WatchEvent[];
  /** Highest revision this stream has delivered or filtered out. */
  sentThrough: number;
  /** The first message has not been delivered yet. */
  opening: boolean;
}

interface Fetch {
  readonly ref: ItemRef;
  readonly env: string;
  readonly epoch: Epoch;
  readonly revision: number;
  resolve(value: LoadedValue): void;
  reject(err: unknown): void;
}

export type Shown = Readonly<Record<string, number>>;

/** The files volume in memory: what the renderer's last publication made visible. */
export class MemoryWriter implements FilePublisher {
  readonly files = new Map<string, Buffer>();
  #snapshots = 0;

  async publish(files: ReadonlyMap<string, FileContent>): Promise<PublishResult> {
    const same = files.size === this.files.size && [...files].every(([path, c]) => this.files.get(path)?.equals(c.data));
    if (same) return { changed: false, snapshot: `..mem${this.#snapshots}`, written: [], linked: [] };
    this.files.clear();
    // The renderer zero-fills the buffers it replaces: the volume keeps its own copy.
    for (const [path, c] of files) this.files.set(path, Buffer.from(c.data));
    return { changed: true, snapshot: `..mem${++this.#snapshots}`, written: [...files.keys()], linked: [] };
  }
}

/** Violations carry a message the shrunk counterexample prints. */
export class Violation extends Error {}

const KEY_PAIR = generateTransportKeyPair();
const LOGGER = createLogger({ component: 'sim', level: 'silent' });
let sharedMetrics: AgentMetrics | undefined;
const FILE_REGISTRY = new Registry();

/** Test-only reintroductions of known bugs, to show the suite catches them. */
export type Bug = 'none' | 'ignore-bookmarks' | 'rev0-as-now' | 'no-supersede-on-connect' | 'files-miss-resync';

export class World {
  readonly clock = new ManualClock();
  readonly epochs: Epoch[] = [];
  epoch: Epoch;
  #writeIds = 0;
  #stores = 0;
  conn: Conn | undefined;
  connected = false;
  streamDownSince: number | undefined;
  readonly fetches: Fetch[] = [];
  readonly cache: ValueCache;
  /** The app reads' memos, per variant key (`read`). */
  readonly #memos = new Map<string, VariantMemo>();
  /** The first app read that failed its check after settling. */
  #readFailure: Violation | undefined;
  readonly hub = new AppliedEventsHub();
  readonly applier: EventApplier;
  readonly deks: DekStore;
  readonly writer = new MemoryWriter();
  readonly renderer: FileRenderer;
  /** Whether the renderer's latest read of (item, env) was served stale (stream down): a file cannot carry the mark. */
  readonly #fileReadStale = new Map<string, boolean>();
  /** The renderer had nothing running or queued at the last settleFiles(). */
  filesIdle = false;
  readonly published: AppliedEvent[] = [];
  readonly sseReceived: AppliedEvent[] = [];
  /** Write ids the agent has applied from the stream since its last floor. */
  readonly delivered = new Set<number>();
  /** The position at the last start-from-now or resync: writes at or before it were superseded, not skipped. */
  floor: LogPosition | undefined;
  #lastStart: StartFrom['kind'] = 'now';
  readonly trace: string[] = [];
  readonly bug: Bug;

  constructor(bug: Bug = 'none') {
    this.bug = bug;
    this.epoch = this.#newEpoch(undefined, []);
    const upstream: Upstream = {
      fetchEnvelope: () => Promise.reject(new Error('unused')),
      fetchRingEnvelope: () => Promise.reject(new Error('unused')),
      fetchDeks: async (namespace, publicKey) => this.epoch.keyring.fetchDeks(namespace, publicKey),
      close: async () => {},
    };
    this.deks = new DekStore(upstream, KEY_PAIR, { maxNamespaces: 8 });
    const late: { applier?: EventApplier } = {};
    this.cache = new ValueCache({
      loader: (ref, env) => this.#load(ref, env),
      clock: this.clock,
      ttl: TTL_MS,
      maxStale: 60_000,
      maxEntries: 100,
      maxBytes: 1 << 20,
      streamDownSince: () => this.streamDownSince,
      onChange: (value) => late.applier?.valueChanged(value),
    });
    let seed = 1;
    sharedMetrics ??= createAgentMetrics({ entries: () => 0, bytes: () => 0 });
    this.applier = new EventApplier({
      cache: this.cache,
      deks: this.deks,
      hub: this.hub,
      prefixes: () => [PREFIX],
      prefetch: () => [],
      env: 'prod',
      clock: this.clock,
      jitterMs: JITTER_MS,
      // Deterministic jitter: the schedule, not Math.random, decides interleavings.
      random: () => {
        seed = (seed * 48271) % 2147483647;
        return seed / 2147483647;
      },
      metrics: sharedMetrics,
      logger: LOGGER,
    });
    late.applier = this.applier;
    this.#installBug();
    this.streamDownSince = this.clock.now();
    const values: FilesValueSource = {
      defaultEnv: 'prod',
      read: async (ref, env = 'prod', signal) => {
        const result = await this.cache.read(ref, env, signal ? { signal } : {});
        this.#fileReadStale.set(`${ref.name}/${env}`, result.source === 'stale');
        const out = { kind: result.value.kind, version: result.value.version, plaintext: Buffer.from(result.value.plaintext) };
        release(result.value);
        return out;
      },
    };
    // The old agent: first-connect revalidation reached the cache but not the renderer.
    const events: AppliedEventSource =
      bug === 'files-miss-resync'
        ? {
            subscribe: (options) => {
              const all = this.hub.subscribe(options);
              return (async function* () {
                for await (const event of all) if (event.type !== 'resync') yield event;
              })();
            },
          }
        : this.hub;
    this.renderer = new FileRenderer({ filesDir: '/sim', specs: FILE_SPECS, values, events, registry: FILE_REGISTRY, logger: LOGGER, clock: this.clock, writer: this.writer, guard: false });
    const sse = this.hub.subscribe({});
    void (async () => {
      for await (const event of sse) this.sseReceived.push(event);
    })();
    const publish = this.hub.publish.bind(this.hub);
    this.hub.publish = (event) => {
      this.published.push(event);
      publish(event);
    };
    this.renderer.activity.on('published', (paths) => this.trace.push(`files published ${paths.join(',')}`));
    this.renderer.activity.on('failed', (path, reason) => this.trace.push(`file ${path} failed (${reason})`));
    void this.renderer.start();
  }

  #installBug(): void {
    const applier = this.applier;
    switch (this.bug) {
      case 'ignore-bookmarks': {
        const apply = applier.apply.bind(applier);
        let first = true;
        applier.apply = (event) => {
          // The old agent: only the first heartbeat of its life moved the applied revision.
          if (event.type === 'heartbeat' && !first && applier.position) return;
          if (event.type === 'heartbeat') first = false;
          apply(event);
        };
        break;
      }
      case 'no-supersede-on-connect':
        // The old agent: first-connect revalidation reused a fill in flight and left cached values fresh.
        this.cache.supersedeAll = () => {};
        break;
      case 'rev0-as-now': // see connect()
      case 'files-miss-resync': // see the constructor
      case 'none':
        break;
    }
  }

  #newEpoch(parent: Epoch | undefined, log: Write[], sameStore = false): Epoch {
    const epoch: Epoch = {
      id: this.epochs.length,
      storeId: sameStore && parent ? parent.storeId : `store-${++this.#stores}`,
      parent,
      log,
      compactedThrough: 0,
      keyring: sameStore && parent ? parent.keyring : new SealedKeyring(),
    };
    this.epochs.push(epoch);
    return epoch;
  }

  get head(): number {
    return this.epoch.log.length;
  }

  digestAt(epoch: Epoch, revision: number): string {
    return revision === 0 ? '' : (epoch.log[revision - 1]?.digest ?? '');
  }

  // --- the server ---------------------------------------------------------

  write(item: number, envIndex: number, inline: boolean): void {
    const ref = ITEMS[item % ITEMS.length] as ItemRef;
    const env = ENVIRONMENTS[envIndex % ENVIRONMENTS.length] as string;
    const id = ++this.#writeIds;
    const w: Write = { id, revision: this.head + 1, digest: `d${id.toString(16)}`, ref, env, inline };
    this.epoch.log.push(w);
    const conn = this.conn;
    if (conn && conn.epoch === this.epoch) {
      if (ref.namespace === PREFIX) conn.queue.push(this.#event(conn.epoch, w));
      conn.sentThrough = w.revision;
    }
  }

  /** A bookmark: the highest revision this stream has delivered or filtered out. */
  heartbeat(): void {
    const conn = this.conn;
    if (!conn) return;
    conn.queue.push(this.#heartbeat(conn.epoch, conn.sentThrough));
  }

  #heartbeat(epoch: Epoch, revision: number): WatchEvent {
    return { type: 'heartbeat', revision, digest: this.digestAt(epoch, revision), currentRevision: epoch.log.length, intervalMs: 1_000, storeId: epoch.storeId, environments: [...ENVIRONMENTS] };
  }

  #event(epoch: Epoch, w: Write): WatchEvent {
    const live = this.#liveLayers(epoch, w.ref, w.revision);
    const layers = w.inline ? live.map((l) => epoch.keyring.sealLayer(w.ref.namespace, w.ref.name, { env: l.env, version: l.id, revision: l.revision }, Buffer.from(JSON.stringify({ [l.env]: l.id })))) : undefined;
    return { type: 'itemChanged', revision: w.revision, digest: w.digest, namespace: w.ref.namespace, name: w.ref.name, kind: 'config', version: w.id, env: w.env, ...(layers ? { layers } : {}) };
  }

  /** The newest write of each env layer of an item at `revision`. */
  #liveLayers(epoch: Epoch, ref: ItemRef, revision: number): Write[] {
    const byEnv = new Map<string, Write>();
    for (const w of epoch.log.slice(0, revision)) if (w.ref.namespace === ref.namespace && w.ref.name === ref.name) byEnv.set(w.env, w);
    return [...byEnv.values()];
  }

  /** The merged value a read of (ref, env) returns at `revision`, as env → write id. */
  expected(epoch: Epoch, ref: ItemRef, env: string, revision: number): Write[] {
    return contributingLayers('config', this.#liveLayers(epoch, ref, revision), environmentChain(env, ENVIRONMENTS) ?? []);
  }

  /** The agent's watch client opens a stream; the server answers per the v1.1 contract. */
  connect(): void {
    if (this.conn) return;
    let start: StartFrom = this.applier.startFrom();
    // The old agent: since_revision 0 meant both "now" and "I applied up to 0".
    if (this.bug === 'rev0-as-now' && start.kind === 'after' && start.position.revision === 0) start = { kind: 'now' };
    this.#lastStart = start.kind;
    const epoch = this.epoch;
    const conn: Conn = { epoch, queue: [], sentThrough: epoch.log.length, opening: true };
    this.conn = conn;
    this.trace.push(`connect ${start.kind === 'after' ? `after(${start.position.storeId},${start.position.revision},${start.position.digest})` : 'now'} to ${epoch.storeId}@${epoch.log.length}`);
    if (start.kind !== 'after') {
      conn.queue.push(this.#heartbeat(epoch, epoch.log.length));
      return;
    }
    const p = start.position;
    const reason =
      p.storeId !== epoch.storeId ? 'store' : p.revision > epoch.log.length ? 'future' : p.revision < epoch.compactedThrough ? 'compacted' : this.digestAt(epoch, p.revision) !== p.digest ? 'digest' : undefined;
    if (reason) {
      conn.queue.push({ type: 'resyncRequired', revision: epoch.log.length, digest: this.digestAt(epoch, epoch.log.length), oldestRevision: epoch.compactedThrough, currentRevision: epoch.log.length, reason, storeId: epoch.storeId, environments: [...ENVIRONMENTS] });
      return;
    }
    conn.queue.push(this.#heartbeat(epoch, p.revision));
    for (const w of epoch.log.slice(p.revision)) if (w.ref.namespace === PREFIX) conn.queue.push(this.#event(epoch, w));
  }

  compact(): void {
    this.epoch.compactedThrough = Math.min(this.head, this.epoch.compactedThrough + 2);
  }

  /** The server process restarts: the stream drops, the store stays. */
  restart(): void {
    this.#dropConn();
  }

  /** `config-sidecar restore --from FILE`: a new store id, revisions go back `back`. */
  restore(back: number): void {
    const keep = Math.max(0, this.head - back);
    this.epoch = this.#newEpoch(this.epoch, this.epoch.log.slice(0, keep));
    this.#dropConn();
  }

  /** Failover to a standby that lost the last `lag` commits: same store id, a shorter log. */
  failover(lag: number): void {
    const keep = Math.max(0, this.head - lag);
    const parent = this.epoch;
    this.epoch = this.#newEpoch(parent, parent.log.slice(0, keep), true);
    this.epoch.compactedThrough = Math.min(parent.compactedThrough, keep);
    this.#dropConn();
  }

  #dropConn(): void {
    this.conn = undefined;
    if (this.connected) {
      this.connected = false;
      this.streamDownSince = this.clock.now();
    }
  }

  /** The network path drops (the watch client notices and reconnects on a later step). */
  drop(): void {
    this.#dropConn();
  }

  /** Delivers the stream's next message to the agent. */
  deliver(): boolean {
    const conn = this.conn;
    const event = conn?.queue.shift();
    if (!conn || !event) return false;
    if (!this.connected) {
      this.connected = true;
      this.streamDownSince = undefined;
    }
    const opening = conn.opening;
    conn.opening = false;
    const before = this.applier.position;
    this.applier.apply(event);
    const after = this.applier.position;
    this.trace.push(`apply ${event.type}@${event.revision}${event.type === 'itemChanged' ? ` ${event.name}/${event.env}#${event.version}${event.layers ? ' inline' : ''}` : ''} -> ${after?.revision ?? '-'}`);
    if (event.type === 'resyncRequired' || (event.type === 'heartbeat' && (!before || (opening && this.#lastStart === 'now'))) || (before && after && before.storeId !== after.storeId)) {
      this.floor = after;
      this.delivered.clear();
    }
    if (event.type === 'itemChanged') {
      const w = conn.epoch.log[event.revision - 1];
      if (w) this.delivered.add(w.id);
    }
    if (event.type === 'heartbeat' && !opening && after && after.storeId === event.storeId && after.revision < event.revision) {
      throw new Violation(`bookmark ignored: heartbeat at ${event.revision} applied, position still ${after.revision}`);
    }
    return true;
  }

  // --- REST -----------------------------------------------------------------

  #load(ref: ItemRef, env: string): Promise<LoadedValue> {
    return new Promise((resolve, reject) => {
      this.fetches.push({ ref, env, epoch: this.epoch, revision: this.head, resolve, reject });
    });
  }

  answer(index: number): void {
    const f = this.fetches.splice(index % this.fetches.length, 1)[0];
    if (!f) return;
    const layers = this.expected(f.epoch, f.ref, f.env, f.revision);
    this.trace.push(`answer ${f.ref.name}/${f.env} at ${f.epoch.storeId}@${f.revision}: ${layers.map((l) => `${l.env}#${l.id}`).join(',') || '404'}`);
    if (layers.length === 0) {
      f.reject(new AppError('not_found'));
      return;
    }
    f.resolve({
      kind: 'config',
      version: Math.max(...layers.map((l) => l.id)),
      revision: Math.max(...layers.map((l) => l.revision)),
      etag: layersEtag(layers.map((l) => ({ version: l.id }))),
      plaintext: mergePlaintexts('config', layers.map((l) => Buffer.from(JSON.stringify({ [l.env]: l.id })))),
    });
  }

  fail(index: number): void {
    const f = this.fetches.splice(index % this.fetches.length, 1)[0];
    this.trace.push(`fail fetch ${f?.ref.name}/${f?.env}`);
    f?.reject(new AppError('unavailable', 'sim: the server is unreachable'));
  }

  // --- the app, the files, SSE -------------------------------------------------

  /**
   * An app read, as the data API makes it: the synchronous hit first, through
   * the variant's memo (one per URL there), else the cache's read; its result
   * is checked when it settles.
   */
  read(ref: ItemRef, env: string): void {
    const key = variantKey(ref, env);
    let memo = this.#memos.get(key);
    if (memo === undefined) this.#memos.set(key, (memo = {}));
    let hit: ReadResult | undefined;
    try {
      hit = this.cache.readCached(ref, env, key, memo);
    } catch {
      return; // a remembered 404
    }
    (hit === undefined ? this.cache.read(ref, env) : Promise.resolve(hit)).then(
      (result) => {
        const shown = JSON.parse(result.value.plaintext.toString()) as Shown;
        release(result.value);
        if (result.source !== 'stale') this.check(`read ${ref.name}/${env} (${result.source})`, ref, env, shown);
      },
      () => {},
    ).catch((err: unknown) => {
      // Thrown in a promise callback (a violation, or bytes that are no value): reported by the next checkState.
      this.#readFailure ??= err instanceof Violation ? err : new Violation(`read ${ref.name}/${env} answered bytes that are no value: ${String(err)}`);
    });
  }

  /** A hot app: reads every key again, each through its memo (a key read while cached keeps its entry there). */
  readAll(): void {
    for (const { ref, env } of READS) this.read(ref, env);
  }

  /** Lets the renderer run what it can without a server answer, and records whether it went idle. */
  async settleFiles(): Promise<void> {
    let idle = false;
    void this.renderer.settled().then(() => {
      idle = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    this.filesIdle = idle;
  }

  /** The renderer retries a failed file with backoff on the clock: move past its cap. */
  retryFiles(): void {
    this.clock.advance(RETRY_CAP_MS + 1);
  }

  /** What file `path` shows on the volume, when it is current (published, healthy, not rendered from a stale read). */
  fileShown(index: number): { shown: Shown | undefined; ok: boolean; stale: boolean } {
    const f = FILES[index] as (typeof FILES)[number];
    const bytes = this.writer.files.get(f.path);
    const ok = this.renderer.health().files[f.path]?.ok === true;
    return { shown: bytes ? (JSON.parse(bytes.toString()) as Shown) : undefined, ok, stale: this.#fileReadStale.get(`${f.ref.name}/${f.env}`) === true };
  }

  // --- invariants ---------------------------------------------------------------

  /** Epochs the agent's position can belong to (those holding its event), with their descendants. */
  #epochsOf(p: LogPosition): Epoch[] {
    const roots = this.epochs.filter((e) => e.storeId === p.storeId && p.revision <= e.log.length && this.digestAt(e, p.revision) === p.digest);
    const out = new Set<Epoch>(roots);
    for (const e of this.epochs) {
      for (let a: Epoch | undefined = e.parent; a; a = a.parent) if (roots.includes(a)) out.add(e);
    }
    return [...out];
  }

  /**
   * (a) After the agent applied P, what it shows for (ref, env) is no older
   * than the newest write at or before P: every layer P's log has is shown,
   * by that write or a later one of some history that continues P's.
   */
  check(what: string, ref: ItemRef, env: string, shown: Shown): void {
    const p = this.applier.position;
    if (!p || p.revision === 0) return;
    // The server went back past P (a restore or failover the agent has not heard of yet): no history continues P.
    if (p.storeId !== this.epoch.storeId || this.digestAt(this.epoch, p.revision) !== p.digest) return;
    const epochs = this.#epochsOf(p);
    const home = epochs[0];
    if (!home) return;
    for (const e of this.expected(home, ref, env, p.revision)) {
      const s = shown[e.env];
      const ok = s !== undefined && epochs.some((ep) => {
        const ie = ep.log.findIndex((w) => w.id === e.id);
        const is = ep.log.findIndex((w) => w.id === s);
        return ie >= 0 && is >= ie;
      });
      if (!ok) throw new Violation(`${what}: shows ${JSON.stringify(shown)} after applying ${p.storeId}@${p.revision}, which has ${e.env}#${e.id}`);
    }
  }

  /** Checks every fresh cached value and every settled file view against the applied position. */
  checkState(): void {
    if (this.#readFailure) throw this.#readFailure;
    for (const { ref, env } of READS) {
      const peeked = this.cache.peek(ref, env);
      if (peeked?.fresh) this.check(`cached ${ref.name}/${env}`, ref, env, JSON.parse(peeked.value.plaintext.toString()) as Shown);
    }
    if (this.filesIdle) {
      FILES.forEach((f, i) => {
        const file = this.fileShown(i);
        if (file.shown && file.ok && !file.stale) this.check(`file ${f.path} (${f.ref.name}/${f.env})`, f.ref, f.env, file.shown);
      });
    }
    // (b) Every write up to the applied position was applied, or superseded by a resync / a start from now.
    const p = this.applier.position;
    if (!p) return;
    const home = this.#epochsOf(p)[0];
    if (!home) return;
    const floor = this.floor && this.floor.storeId === p.storeId ? this.floor.revision : 0;
    for (const w of home.log.slice(floor, p.revision)) {
      if (w.ref.namespace === PREFIX && !this.delivered.has(w.id)) throw new Violation(`write ${w.ref.name}/${w.env}#${w.id} at ${p.storeId}@${w.revision} skipped: the agent is at ${p.revision} and never applied it`);
    }
  }
}
