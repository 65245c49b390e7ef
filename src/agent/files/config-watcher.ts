/**
 * Hot reload of the agent's own `--config` file (DESIGN.md §6). chokidar
 * watches the file's directory, not the file: editors replace files by rename,
 * and a Kubernetes ConfigMap volume swaps a `..data` link beside it, so the
 * file's own inode is not what changes. Once activity settles the file is read and
 * hashed; only new content calls `apply`. Reloads are serialised. When
 * `apply` throws (bad YAML, a bad setting) the error is logged naming the
 * setting and the running config stays in force; the next valid edit applies.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { FSWatcher } from 'chokidar';
import { Counter } from '../../shared/metrics/counter.ts';
import type { MetricsRegistry } from '../../shared/metrics/registry.ts';
import type { Logger } from '../../shared/logger.ts';

export type ReloadOutcome = 'applied' | 'refused' | 'unchanged';

export interface ConfigWatcherOptions {
  readonly path: string;
  /** Parses, validates and applies the new file; throws (SettingError) to refuse it. */
  readonly apply: () => Promise<void>;
  readonly logger: Logger;
  readonly registry?: MetricsRegistry;
  /** Called after each reload attempt (tests wait on it). */
  readonly onReload?: (outcome: ReloadOutcome, error?: string) => void;
}

const RELOADS_METRIC = 'config_sidecar_agent_config_reloads_total';
/**
 * The file is read this long after the last watcher event, not at the first
 * one. A plain `>` redirect or writeFile truncates, then writes: reading at
 * the first event could see an empty or half-written file and apply it (an
 * empty `files:` would delete every rendered file) or report a spurious
 * refusal. Waiting for the events to go quiet also covers chokidar dropping a
 * second change event for one path within 5 ms of the first.
 */
export const SETTLE_MS = 100;

export class ConfigWatcher {
  readonly ready: Promise<void>;
  readonly #options: ConfigWatcherOptions;
  readonly #path: string;
  readonly #reloads: Counter<'outcome'> | undefined;
  #watcher: FSWatcher | undefined;
  #lastHash: string | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #settle: NodeJS.Timeout | undefined;

  constructor(options: ConfigWatcherOptions) {
    this.#options = options;
    this.#path = resolve(options.path);
    const registry = options.registry;
    this.#reloads = registry
      ? ((registry.getSingleMetric(RELOADS_METRIC) as Counter<'outcome'> | undefined) ??
        new Counter({ name: RELOADS_METRIC, help: 'Config file reloads, by outcome (applied, refused).', labelNames: ['outcome'], registers: [registry] }))
      : undefined;
    this.ready = this.#start();
  }

  async #start(): Promise<void> {
    // The config in force was read from this content; only a different one is a change.
    this.#lastHash = await this.#hash().catch(() => undefined);
    const { watch } = await import('chokidar');
    if (this.#closed) return;
    const name = basename(this.#path);
    const watcher = watch(dirname(this.#path), {
      ignoreInitial: true,
      depth: 0,
      persistent: false,
      atomic: false,
      // Only the file itself and a ConfigMap's `..data` swap matter.
      ignored: (p: string) => p !== dirname(this.#path) && basename(p) !== name && !basename(p).startsWith('..'),
    });
    this.#watcher = watcher;
    watcher.on('all', () => {
      clearTimeout(this.#settle);
      this.#settle = setTimeout(() => this.#trigger(), SETTLE_MS).unref();
    });
    watcher.on('error', (err: unknown) => this.#options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'config file watcher error'));
    await new Promise<void>((done) => watcher.once('ready', () => done()));
    this.#options.logger.info({ config: this.#path }, 'watching the config file for changes');
    // An edit between the first hash and the watcher being up fired no event: one compare catches it
    // (after the settle period too, and any event meanwhile moves it on, like any other read).
    this.#settle ??= setTimeout(() => this.#trigger(), SETTLE_MS).unref();
  }

  async #hash(): Promise<string> {
    const data = await readFile(this.#path);
    return createHash('sha256').update(data).digest('hex');
  }

  #trigger(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#reload().finally(() => {
      this.#running = undefined;
      if (this.#again) {
        this.#again = false;
        this.#trigger();
      }
    });
  }

  async #reload(): Promise<void> {
    const { logger, apply, onReload } = this.#options;
    let hash: string;
    try {
      hash = await this.#hash();
    } catch (err) {
      // Mid-replace or deleted: keep the running config; a later event brings the new file.
      logger.warn({ config: this.#path, code: (err as NodeJS.ErrnoException).code }, 'config file unreadable; keeping the running config');
      return;
    }
    if (hash === this.#lastHash) {
      onReload?.('unchanged');
      return;
    }
    this.#lastHash = hash;
    try {
      await apply();
      this.#reloads?.inc({ outcome: 'applied' });
      logger.info({ config: this.#path }, 'config file reloaded');
      onReload?.('applied');
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.#reloads?.inc({ outcome: 'refused' });
      logger.error({ config: this.#path, err: message }, 'config file change refused; the running config stays in force');
      onReload?.('refused', message);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#settle);
    await this.ready.catch(() => undefined);
    await this.#watcher?.close();
    await this.#running;
  }
}
