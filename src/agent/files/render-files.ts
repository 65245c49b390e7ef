/**
 * Keeps the rendered files on the shared volume exactly as fresh as the cache
 * (DESIGN.md §6, issue 5).
 *
 * - On start every configured file is rendered and published in one snapshot.
 * - Each applied event marks only the files whose items it touches; marked
 *   files are re-rendered in one batch that reads each item once, so two files
 *   fed by one item always change in the same publication. A batch whose bytes
 *   equal the published ones writes nothing (counted as a skip).
 * - A file that fails (missing item, template error, unrepresentable value,
 *   write error) keeps its last good version on disk, is marked unhealthy in
 *   `health()` and a metric, is retried with backoff, and never stops the
 *   other files.
 * - The guard (file-guard.ts) reports activity in the directory; the renderer
 *   then compares every file with what it published and restores the ones
 *   changed or deleted by someone else. Our own writes compare equal, so they
 *   are never "restored".
 *
 * All work runs in one loop, so publications, verifications and reloads never
 * interleave.
 */
import { EventEmitter } from 'node:events';
import { lstat, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { MetricsRegistry } from '../../shared/metrics/registry.ts';
import { Backoff } from '../../shared/backoff.ts';
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.ts';
import { AppError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { itemKey, namespaceMatchesPrefix, type ItemRef } from '../../shared/paths.ts';
import type { AppliedEvent } from '../applied-events.ts';
import { AtomicWriter, DATA_DIR_NAME, PublishError, type FileContent, type FilePublisher, type WriterFs } from './atomic-writer.ts';
import { FileGuard } from './file-guard.ts';
import { fileMetrics, type FileMetrics } from './file-metrics.ts';
import { checkFilesDir, type FileSpec } from './file-spec.ts';
import { loadFormats, renderFile } from './formats.ts';
import type { ItemValue } from './item-value.ts';
import { FileRenderError } from './render-error.ts';
import { ReloadHooks, type ReloadHook } from './reload-hook.ts';
import { isRingFormat } from './ring-formats.ts';

/** First retry of a failed file; doubles up to the cap (full jitter, shared/backoff.ts). */
export const RETRY_BASE_MS = 500;
export const RETRY_CAP_MS = 30_000;

/** The value reads the renderer needs (the agent's `ValueSource` satisfies it). */
export interface FilesValueSource {
  readonly defaultEnv: string;
  /** Resolves a private copy of the plaintext; the renderer zero-fills it after use. */
  read(ref: ItemRef, env?: string, signal?: AbortSignal): Promise<{ readonly kind: 'config' | 'secret'; readonly version: number; readonly plaintext: Buffer }>;
  /** The item's key ring, for the ring formats (jwks, pem-bundle); private copies the renderer zero-fills. */
  readRing?(ref: ItemRef, env: string, signal?: AbortSignal): Promise<RingSourced>;
}

/** A key ring as the renderer reads it. */
export interface RingSourced {
  readonly kind: 'config' | 'secret';
  readonly current: { readonly version: number; readonly plaintext: Buffer };
  readonly previous: ReadonlyArray<{ readonly version: number; readonly plaintext: Buffer }>;
}

/** Zero-fills a value read for rendering, its ring members included. */
function wipe(v: ItemValue): void {
  v.value.fill(0);
  for (const p of v.previous ?? []) p.value.fill(0);
}

/** The applied-events hub as the renderer uses it. */
export interface AppliedEventSource {
  subscribe(options: { signal?: AbortSignal }): AsyncIterable<AppliedEvent>;
}

export interface FileRendererOptions {
  readonly filesDir: string;
  readonly specs: readonly FileSpec[];
  readonly values: FilesValueSource;
  readonly events: AppliedEventSource;
  readonly registry: MetricsRegistry;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Injected file-system layer for the atomic writer (tests inject ENOSPC / EACCES). */
  readonly writerFs?: WriterFs;
  /** Replaces the atomic writer (the freshness simulation publishes in memory, with `guard: false`). */
  readonly writer?: FilePublisher;
  /** Watch the rendered files with chokidar and restore foreign changes. @default true */
  readonly guard?: boolean;
  /** The agent's applied revision: a batch's values are at least this new when its reads start. @default () => 0 */
  readonly appliedRevision?: () => number;
}

/** What the renderer did, for tests and the agent's log hooks: `published` (a snapshot went live), `skipped`, `restored`, `failed`. */
export interface FileActivity {
  published: [paths: readonly string[]];
  skipped: [path: string];
  restored: [path: string, kind: 'changed' | 'deleted'];
  failed: [path: string, reason: string];
  /** Every file is published and healthy with everything applied up to this revision (`publishedRevision`). */
  caughtUp: [revision: number];
}

export interface FileHealth {
  readonly ok: boolean;
  readonly detail?: string;
}

interface FileState {
  spec: FileSpec;
  /** Last bytes published for this file (zero-filled when replaced). */
  published: Buffer | undefined;
  health: FileHealth;
  backoff: Backoff;
  retry: TimerHandle | undefined;
}

function specKey(spec: FileSpec): string {
  return JSON.stringify(spec);
}

/** Ring formats read the item's ring, under its own key. */
function valueKey(spec: FileSpec, ref: ItemRef, env: string): string {
  return isRingFormat(spec.format) ? `ring\u0000${readKey(ref, env)}` : readKey(ref, env);
}

function readKey(ref: ItemRef, env: string): string {
  return `${itemKey(ref)}@${env}`;
}

function describe(err: unknown): { reason: string; detail: string } {
  if (err instanceof FileRenderError) return { reason: err.reason, detail: err.message };
  if (err instanceof PublishError) return { reason: err.code, detail: err.message };
  if (err instanceof AppError) return { reason: err.code, detail: err.message };
  return { reason: 'internal', detail: err instanceof Error ? err.message : String(err) };
}

export class FileRenderer {
  readonly filesDir: string;
  /** Emits `published`, `skipped`, `restored` and `failed` (never values). */
  readonly activity = new EventEmitter<FileActivity>();
  readonly #values: FilesValueSource;
  readonly #events: AppliedEventSource;
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #metrics: FileMetrics;
  readonly #writer: FilePublisher;
  readonly #hooks: ReloadHooks;
  /** Hooks of files changed since the loop was last idle: called once it is (a burst, a change set, is one call). */
  #pendingHooks: ReloadHook[] = [];
  readonly #guardEnabled: boolean;
  readonly #abort = new AbortController();
  #states = new Map<string, FileState>();
  /** Paths to re-render in the next batch. */
  #dirty = new Set<string>();
  /** Receipt times of events the next batch answers (for the lag histogram). */
  #eventTimes: number[] = [];
  #verify = false;
  #publishNeeded = false;
  /** Between the first and the last member of a change set: no batch may start. */
  #openSet = false;
  #loop: Promise<void> | undefined;
  #guard: FileGuard | undefined;
  #started = false;
  /** Set once the guard (when enabled) is watching: readiness waits for it. */
  #guarded = false;
  #stopped = false;
  #idleWaiters: Array<() => void> = [];
  readonly #appliedRevision: () => number;
  /** The highest revision of an applied event received. */
  #seenRevision = 0;
  /** The applied revision when the last batch started reading. */
  #batchRevision = 0;
  #publishedRevision = 0;

  constructor(options: FileRendererOptions) {
    this.filesDir = options.filesDir;
    this.#values = options.values;
    this.#events = options.events;
    this.#logger = options.logger.child({ module: 'files' });
    this.#clock = options.clock ?? systemClock;
    this.#metrics = fileMetrics(options.registry);
    this.#writer = options.writer ?? new AtomicWriter(options.filesDir, options.writerFs ? { fs: options.writerFs } : {});
    this.#hooks = new ReloadHooks({ registry: options.registry, logger: this.#logger, clock: this.#clock });
    this.#guardEnabled = options.guard ?? true;
    this.#appliedRevision = options.appliedRevision ?? (() => 0);
    for (const spec of options.specs) this.#states.set(spec.path, this.#newState(spec));
  }

  #newState(spec: FileSpec): FileState {
    this.#metrics.healthy.set({ file: spec.path }, 0);
    return { spec, published: undefined, health: { ok: false, detail: 'not rendered yet' }, backoff: new Backoff({ baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS }), retry: undefined };
  }

  /** Renders every file, publishes them, then follows applied events and (optionally) guards the files. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await loadFormats([...this.#states.values()].map((state) => state.spec));
    // Subscribe before the first render, so no event between the two is missed.
    void this.#follow(this.#events.subscribe({ signal: this.#abort.signal }));
    for (const path of this.#states.keys()) this.#dirty.add(path);
    this.#publishNeeded = true;
    await this.settled();
    if (this.#guardEnabled) {
      this.#guard = new FileGuard(this.filesDir, () => this.#requestVerify(), this.#logger);
      await this.#guard.ready;
      // Any change made before the watcher was up is caught by one verification now.
      this.#requestVerify();
      await this.settled();
    }
    this.#guarded = true;
  }

  /** Applies a new `files:` list (config reload): new files rendered, removed files deleted, changed ones re-rendered. */
  async reconfigure(specs: readonly FileSpec[]): Promise<void> {
    await loadFormats(specs);
    const next = new Map<string, FileState>();
    for (const spec of specs) {
      const current = this.#states.get(spec.path);
      if (current && specKey(current.spec) === specKey(spec)) {
        next.set(spec.path, current);
        continue;
      }
      const state = current ?? this.#newState(spec);
      state.spec = spec;
      next.set(spec.path, state);
      this.#dirty.add(spec.path);
    }
    for (const [path, state] of this.#states) {
      if (next.has(path)) continue;
      state.retry?.cancel();
      state.published?.fill(0);
      this.#metrics.healthy.remove({ file: path });
      this.#dirty.delete(path);
      this.#logger.info({ file: path }, 'file removed from config; deleting it');
    }
    this.#states = next;
    this.#publishNeeded = true;
    this.#kick();
    await this.settled();
  }

  /** Per-file health for /readyz detail; `ready` once every file has been published at least once and the guard is watching. */
  health(): { ready: boolean; files: Readonly<Record<string, FileHealth>> } {
    const files: Record<string, FileHealth> = {};
    let ready = this.#guarded;
    for (const [path, state] of this.#states) {
      files[path] = state.health;
      if (state.published === undefined) ready = false;
    }
    return { ready, files };
  }

  /**
   * The revision the published files are known to reflect: every event applied
   * up to it was handled (published, or nothing to change) and every file is
   * healthy. A staged rollout counts a canary that renders files as applied
   * only once this reaches the rollout's revision.
   */
  get publishedRevision(): number {
    return this.#publishedRevision;
  }

  /** Resolves when no batch is running or queued (tests and reload wait on it). */
  settled(): Promise<void> {
    this.#kick();
    if (!this.#loop) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#abort.abort();
    this.#hooks.close();
    for (const state of this.#states.values()) state.retry?.cancel();
    await this.#guard?.close();
    await this.#loop;
    for (const state of this.#states.values()) state.published?.fill(0);
  }

  async #follow(subscription: AsyncIterable<AppliedEvent>): Promise<void> {
    try {
      for await (const event of subscription) this.#onEvent(event);
    } catch (err) {
      this.#logger.error({ err: describe(err).detail }, 'applied-events subscription failed');
    }
  }

  #affects(spec: FileSpec, event: AppliedEvent): boolean {
    return spec.items.some((item) => {
      switch (event.type) {
        case 'changed':
        case 'deleted':
          return item.namespace === event.namespace && item.name === event.name;
        case 'rotated':
          return item.namespace === event.namespace;
        case 'resync':
          return event.namespace === '' || namespaceMatchesPrefix(item.namespace, event.namespace);
      }
      return false;
    });
  }

  #onEvent(event: AppliedEvent): void {
    // The last member of a change set this agent applied stands for the whole set.
    this.#seenRevision = Math.max(this.#seenRevision, event.endsSet === true && event.setRevision !== undefined ? event.setRevision : event.revision);
    let any = false;
    for (const [path, state] of this.#states) {
      if (!this.#affects(state.spec, event)) continue;
      this.#dirty.add(path);
      any = true;
    }
    // The rest of a change set was published in the same step: render once, after its last member
    // (and start no batch before it, or a file fed by a later member would be published old beside a new one).
    this.#openSet = event.setRevision !== undefined && event.endsSet !== true;
    if (!any) {
      if (!this.#openSet) this.#kick();
      this.#caughtUp();
      return;
    }
    this.#eventTimes.push(this.#clock.now());
    this.#kick();
  }

  #requestVerify(): void {
    this.#verify = true;
    this.#kick();
  }

  #kick(): void {
    if (this.#loop || this.#stopped || this.#openSet) return;
    if (this.#dirty.size === 0 && !this.#verify && !this.#publishNeeded) return;
    this.#loop = this.#run().finally(() => {
      this.#loop = undefined;
      if (!this.#stopped && (this.#dirty.size > 0 || this.#verify || this.#publishNeeded)) {
        this.#kick();
        return;
      }
      if (!this.#stopped && this.#pendingHooks.length > 0) this.#hooks.notify(this.#pendingHooks.splice(0));
      this.#caughtUp();
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    });
  }

  async #run(): Promise<void> {
    while (!this.#stopped && (this.#dirty.size > 0 || this.#verify || this.#publishNeeded)) {
      if (this.#verify) {
        this.#verify = false;
        await this.#verifyFiles();
      }
      // Sampled before the reads: values read after an event was applied are at least that new.
      this.#batchRevision = Math.max(this.#batchRevision, this.#appliedRevision());
      const dirty = [...this.#dirty];
      this.#dirty.clear();
      const eventTimes = this.#eventTimes;
      this.#eventTimes = [];
      try {
        await this.#batch(dirty, eventTimes);
      } catch (err) {
        this.#logger.error({ err: describe(err).detail }, 'file batch failed');
      }
    }
  }

  /** Reads every item the dirty files need once, so files fed by one item see one value. */
  async #readAll(states: readonly FileState[]): Promise<Map<string, ItemValue | Error>> {
    const wanted = new Map<string, { ref: ItemRef; env: string; ring: boolean }>();
    for (const state of states) {
      for (const item of state.spec.items) {
        const env = item.env ?? this.#values.defaultEnv;
        wanted.set(valueKey(state.spec, item, env), { ref: { namespace: item.namespace, name: item.name }, env, ring: isRingFormat(state.spec.format) });
      }
    }
    const out = new Map<string, ItemValue | Error>();
    await Promise.all(
      [...wanted].map(async ([key, { ref, env, ring }]) => {
        try {
          if (ring) {
            if (!this.#values.readRing) throw new AppError('unavailable', 'this agent cannot read key rings');
            const r = await this.#values.readRing(ref, env, this.#abort.signal);
            const previous = r.previous.map((p) => ({ kind: r.kind, version: p.version, value: p.plaintext }));
            out.set(key, { kind: r.kind, version: r.current.version, value: r.current.plaintext, previous });
            return;
          }
          const v = await this.#values.read(ref, env, this.#abort.signal);
          out.set(key, { kind: v.kind, version: v.version, value: v.plaintext });
        } catch (err) {
          out.set(key, err instanceof Error ? err : new Error(String(err)));
        }
      }),
    );
    return out;
  }

  #render(state: FileState, values: Map<string, ItemValue | Error>): Buffer {
    const byName = new Map<string, ItemValue>();
    for (const item of state.spec.items) {
      const v = values.get(valueKey(state.spec, item, item.env ?? this.#values.defaultEnv));
      if (v instanceof Error) {
        const code = v instanceof AppError ? v.code : 'error';
        throw new FileRenderError('missing_item', `item ${item.namespace}/${item.name} could not be read (${code}): ${v.message}`);
      }
      if (v) byName.set(item.as, v);
    }
    return renderFile(state.spec, byName);
  }

  async #batch(paths: readonly string[], eventTimes: readonly number[]): Promise<void> {
    const states = paths.map((p) => this.#states.get(p)).filter((s): s is FileState => s !== undefined);
    const values = states.length > 0 ? await this.#readAll(states) : new Map<string, ItemValue | Error>();
    // An event for these files landed while their items were being read: the values may straddle it
    // (one item before, another after), so they are all read again rather than published side by side.
    if (this.#stopped || paths.some((path) => this.#dirty.has(path))) {
      for (const v of values.values()) if (!(v instanceof Error)) wipe(v);
      if (!this.#stopped) {
        this.#eventTimes = [...eventTimes, ...this.#eventTimes];
        // The whole batch is read again: a file the new event did not touch was still not published.
        for (const path of paths) this.#dirty.add(path);
      }
      return;
    }
    const candidates = new Map<string, Buffer>();
    try {
      for (const state of states) {
        // A reload may have removed the file while its items were being read.
        if (this.#states.get(state.spec.path) !== state) continue;
        let bytes: Buffer;
        try {
          bytes = this.#render(state, values);
        } catch (err) {
          this.#fail(state, err);
          continue;
        }
        if (state.published?.equals(bytes)) {
          this.#metrics.skips.inc({ file: state.spec.path });
          bytes.fill(0);
          this.#succeed(state);
          this.activity.emit('skipped', state.spec.path);
          continue;
        }
        candidates.set(state.spec.path, bytes);
      }
    } finally {
      for (const v of values.values()) if (!(v instanceof Error)) wipe(v);
    }

    if (candidates.size === 0 && !this.#publishNeeded) {
      this.#observeLag(eventTimes);
      return;
    }
    const payload = new Map<string, FileContent>();
    for (const [path, state] of this.#states) {
      const data = candidates.get(path) ?? state.published;
      if (data) payload.set(path, { data, mode: state.spec.mode });
    }
    this.#publishNeeded = false;
    try {
      const result = await this.#writer.publish(payload);
      if (result.changed) {
        this.#metrics.publications.inc();
        this.#logger.info({ files: [...candidates.keys()], snapshot: result.snapshot }, 'files published');
        this.activity.emit('published', [...candidates.keys()]);
        // Files published for the first time (start, a new entry) are not a change the app must reload for.
        for (const path of candidates.keys()) {
          const state = this.#states.get(path);
          if (state?.published !== undefined && state.spec.onChange) this.#pendingHooks.push(state.spec.onChange);
        }
      }
    } catch (err) {
      for (const [path, bytes] of candidates) {
        const state = this.#states.get(path);
        bytes.fill(0);
        if (state) this.#fail(state, err);
      }
      if (candidates.size === 0) {
        // A restore or removal that could not be written: try again with backoff.
        this.#logger.error({ reason: describe(err).reason }, 'publishing files failed; the previous files stay in place');
        this.#clock.setTimeout(() => {
          this.#publishNeeded = true;
          this.#kick();
        }, RETRY_BASE_MS);
      }
      return;
    }
    for (const [path, bytes] of candidates) {
      const state = this.#states.get(path) as FileState;
      state.published?.fill(0);
      state.published = bytes;
      this.#metrics.renders.inc({ file: path });
      this.#succeed(state);
    }
    this.#observeLag(eventTimes);
  }

  /**
   * Idle with nothing queued and every file healthy: the files reflect the
   * last batch's revision and every event received since (one that touched a
   * file would have queued another batch).
   */
  #caughtUp(): void {
    if (this.#loop || this.#stopped || this.#openSet || this.#dirty.size > 0 || this.#verify || this.#publishNeeded) return;
    for (const state of this.#states.values()) if (!state.health.ok || state.published === undefined) return;
    const revision = Math.max(this.#batchRevision, this.#seenRevision);
    if (revision <= this.#publishedRevision) return;
    this.#publishedRevision = revision;
    this.activity.emit('caughtUp', revision);
  }

  #observeLag(eventTimes: readonly number[]): void {
    const now = this.#clock.now();
    for (const t of eventTimes) this.#metrics.eventLag.observe(Math.max(0, now - t) / 1000);
  }

  #succeed(state: FileState): void {
    state.backoff.reset();
    state.retry?.cancel();
    state.retry = undefined;
    if (!state.health.ok) this.#logger.info({ file: state.spec.path }, 'file healthy');
    state.health = { ok: true };
    this.#metrics.healthy.set({ file: state.spec.path }, 1);
  }

  #fail(state: FileState, err: unknown): void {
    const { reason, detail } = describe(err);
    const path = state.spec.path;
    this.#metrics.failures.inc({ file: path, reason });
    this.#metrics.healthy.set({ file: path }, 0);
    const kept = state.published ? 'the last good version stays in place' : 'no version was published yet';
    state.health = { ok: false, detail: `${detail}; ${kept}` };
    // The detail names items and keys, never values.
    this.#logger.warn({ file: path, reason, detail }, `file not rendered; ${kept}`);
    this.activity.emit('failed', path, reason);
    if (state.retry === undefined && !this.#stopped) {
      state.retry = this.#clock.setTimeout(() => {
        state.retry = undefined;
        if (this.#states.get(path) !== state) return;
        this.#dirty.add(path);
        this.#kick();
      }, state.backoff.next());
    }
  }

  /**
   * Compares each published file, read through its user-visible path, with
   * what was published; a difference is someone else's change and is restored
   * by the next publication (the writer rewrites files whose disk bytes differ).
   */
  async #verifyFiles(): Promise<void> {
    for (const [path, state] of this.#states) {
      if (!state.published) continue;
      const kind = await this.#tampered(path, state);
      if (!kind) continue;
      this.#metrics.restores.inc({ file: path, kind });
      this.#logger.warn({ file: path, kind }, `rendered file was ${kind} by someone else; restoring it`);
      this.#publishNeeded = true;
      this.activity.emit('restored', path, kind);
    }
  }

  async #tampered(path: string, state: FileState): Promise<'changed' | 'deleted' | undefined> {
    const full = join(this.filesDir, path);
    const top = path.split('/')[0] as string;
    try {
      const link = await readlink(join(this.filesDir, top)).catch(() => undefined);
      if (link === undefined) {
        await lstat(join(this.filesDir, top));
        return 'changed'; // replaced by a regular file or directory
      }
      if (link !== `${DATA_DIR_NAME}/${top}`) return 'changed';
      const [data, st] = await Promise.all([readFile(full), stat(full)]);
      const same = data.equals(state.published as Buffer) && (st.mode & 0o777) === state.spec.mode;
      data.fill(0);
      return same ? undefined : 'changed';
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return 'deleted';
      return 'changed';
    }
  }
}

/**
 * Specs the settings schema validated (file-spec-schema.ts), checked again
 * against the real directory: a symlink can appear after validation, and a
 * reload's specs were validated in another process. Throws a SettingError
 * naming the entry.
 */
export function loadFileSpecs(specs: readonly FileSpec[], filesDir: string): readonly FileSpec[] {
  checkFilesDir(specs, filesDir);
  return specs;
}
