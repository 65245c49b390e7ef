/**
 * Keeps the warm-restart snapshot (issue 19) current: at most once per
 * `--snapshot-interval` while the stream vouches for the values (so the
 * snapshot's time moves with it) or after something served changed; at once
 * when a value is deleted or revoked (`requestNow`, also the hook for a
 * retired data key); and a last time on shutdown. One write at a time; a
 * request during a write is served by one more write after it.
 *
 * Nothing is kept for the snapshot's sake: each write takes the values the
 * cache holds at that moment (leased, so they are not zero-filled while
 * being sealed), seals them record by record into the file, and lets go.
 */
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import { zeroize } from '../../shared/crypto.ts';
import { clientActionOf, describeError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { LogPosition } from '../../shared/watch-proto.ts';
import { release, type CacheObserver, type CachedValue } from '../value-cache.ts';
import { writeSnapshotFile } from './snapshot-files.ts';
import { sealedChunks, SnapshotSealer, type SealedMark, type SealedRing } from './snapshot-format.ts';
import type { SnapshotMetrics } from './snapshot-metrics.ts';

/** What one write seals: the values are retained by `collect` and released by the writer. */
export interface SnapshotContent {
  readonly takenAt: Milliseconds;
  readonly position: LogPosition;
  readonly values: readonly CachedValue[];
  /** Key rings: copies owned by the writer, zero-filled once sealed. */
  readonly rings: readonly SealedRing[];
  /** The rollouts whose candidates the values are (the fleet report's). */
  readonly rollouts?: readonly SealedMark[];
}

export interface SnapshotterOptions {
  readonly dir: string;
  readonly key: Buffer;
  readonly scope: string;
  readonly interval: Milliseconds;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: SnapshotMetrics;
  /** Synchronous, so values and position are one consistent moment; undefined when there is nothing to vouch for yet. */
  collect(): SnapshotContent | undefined;
  /** True while the stream vouches for the values: every interval then moves the snapshot's time. */
  connected(): boolean;
}

export class Snapshotter {
  readonly #o: SnapshotterOptions;
  #timer: TimerHandle | undefined;
  #dirty = false;
  #again = false;
  #writing: Promise<void> | undefined;
  #stopped = false;

  constructor(options: SnapshotterOptions) {
    this.#o = options;
  }

  start(): void {
    this.#schedule();
  }

  /** Something served changed: written by the next interval. */
  changed(): void {
    this.#dirty = true;
  }

  /** A value was deleted or revoked (or a data key retired): rewrite now, not at the interval. */
  requestNow(): void {
    if (!this.#stopped) this.#kick();
  }

  /** Resolves once no write is running (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** The last write (SIGTERM), then no more; the key is zero-filled. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#stopped) return;
    this.#timer?.cancel();
    await this.settled();
    this.#kick();
    this.#stopped = true;
    await this.settled();
    zeroize(this.#o.key);
  }

  #schedule(): void {
    this.#timer = this.#o.clock.setTimeout(() => {
      if (this.#stopped) return;
      if (this.#dirty || this.#o.connected()) this.#kick();
      this.#schedule();
    }, this.#o.interval);
  }

  #kick(): void {
    if (this.#writing) {
      this.#again = true;
      return;
    }
    this.#writing = (async () => {
      do {
        this.#again = false;
        await this.#writeOnce();
      } while (this.#again && !this.#stopped);
    })().finally(() => {
      this.#writing = undefined;
    });
  }

  async #writeOnce(): Promise<void> {
    const content = this.#o.collect();
    if (!content) return;
    this.#dirty = false;
    const { values, rings } = content;
    const marks = content.rollouts ?? [];
    let released = 0;
    const sealer = new SnapshotSealer(this.#o.key, { scope: this.#o.scope, takenAt: content.takenAt, position: content.position }, values, rings, marks);
    const letGo = (i: number): void => {
      if (i < values.length) release(values[i] as CachedValue);
      else if (i < values.length + rings.length) zeroize((rings[i - values.length] as SealedRing).plaintext);
    };
    const chunks = sealedChunks(sealer, [...values, ...rings, ...marks], (i) => {
      letGo(i);
      released = i + 1;
    });
    const started = performance.now();
    try {
      const bytes = await writeSnapshotFile(this.#o.dir, chunks);
      this.#o.metrics.writes.inc({ outcome: 'ok' });
      this.#o.metrics.bytes.set(bytes);
      this.#o.metrics.takenAt.set(content.takenAt / 1000);
      this.#o.logger.debug({ values: values.length, rings: rings.length, bytes, revision: content.position.revision, ms: Math.round(performance.now() - started) }, 'snapshot written');
    } catch (err) {
      this.#o.metrics.writes.inc({ outcome: 'error' });
      // The last good snapshot stays in place (the write goes to a temporary file first).
      this.#o.logger.error({ dir: this.#o.dir, err: describeError(err) }, 'snapshot write failed; the previous snapshot is kept');
    } finally {
      for (let i = released; i < values.length + rings.length; i++) letGo(i);
    }
  }
}

/** The cache's observer, plus a call to `onDrop` when a failure drops a value (revoked, deleted, corrupt). */
export function observeDrops(base: CacheObserver, onDrop: () => void): CacheObserver {
  return {
    hit: () => base.hit(),
    miss: () => base.miss(),
    coalesced: () => base.coalesced(),
    stale: () => base.stale(),
    eviction: (reason) => base.eviction(reason),
    superseded: () => base.superseded(),
    upstreamFailure: (code) => {
      base.upstreamFailure(code);
      if (clientActionOf(code) === 'drop') onDrop();
    },
  };
}
