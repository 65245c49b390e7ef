/**
 * Warm restart (issue 19): at start the agent loads a valid snapshot from
 * `--snapshot-dir` into its cache, as last confirmed at the snapshot's time,
 * and adopts its applied position, so it serves (stale-marked) before the
 * server answers and resumes the stream after that position. A snapshot that
 * is torn, not ours, sealed with another key, made for another configuration,
 * fails authentication, or is older than max-stale is refused with a log line
 * and a metric, deleted, and nothing from it is served.
 */
import type { Clock } from '../../shared/clock.ts';
import { zeroize } from '../../shared/crypto.ts';
import type { Logger } from '../../shared/logger.ts';
import type { RolloutVersion } from '../../shared/fleet-proto.ts';
import { parseItemPath, type ItemRef } from '../../shared/paths.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { LogPosition } from '../../shared/watch-proto.ts';
import { discardSnapshotFile, readSnapshotFile } from './snapshot-files.ts';
import { releaseRing } from '../ring-store.ts';
import { openSnapshot, type RefusalReason, type SnapshotRing, type SnapshotValue } from './snapshot-format.ts';
import type { SnapshotMetrics } from './snapshot-metrics.ts';

export interface RestoredSnapshot {
  /** Until when the values were known current. */
  readonly takenAt: Milliseconds;
  readonly position: LogPosition;
  readonly values: number;
  /** Key rings restored (held apart from the cache). */
  readonly rings: number;
}

export interface RestoreOptions {
  readonly dir: string;
  readonly key: Buffer;
  readonly scope: string;
  readonly clock: Clock;
  readonly maxStale: Milliseconds;
  readonly logger: Logger;
  readonly metrics: SnapshotMetrics;
  /** Deny by default: only items under today's prefixes are restored. */
  allowed(ref: ItemRef): boolean;
  /** Puts one value in the cache (which owns its plaintext from then on). */
  restore(value: SnapshotValue, takenAt: Milliseconds): void;
  /** Holds one key ring (the ring store owns its plaintexts from then on). */
  restoreRing(ring: SnapshotRing, takenAt: Milliseconds): void;
  /** A restored value is this rollout's candidate (the fleet report says so again). */
  restoreRollout?(mark: RolloutVersion): void;
}

export async function restoreSnapshot(o: RestoreOptions): Promise<RestoredSnapshot | undefined> {
  const file = await readSnapshotFile(o.dir);
  if (!file) {
    o.logger.info({ dir: o.dir }, 'no snapshot to restore; waiting for the server');
    return undefined;
  }
  const refuse = async (reason: RefusalReason, detail: string): Promise<undefined> => {
    o.metrics.refused.inc({ reason });
    o.logger.warn({ dir: o.dir, reason, detail }, 'snapshot refused; nothing from it is served, waiting for the server');
    await discardSnapshotFile(o.dir);
    return undefined;
  };
  const opened = openSnapshot(file, o.key, o.scope);
  if (!opened.ok) return refuse(opened.reason, opened.detail);
  const { header, values, rings, rollouts } = opened;
  const now = o.clock.now();
  // A time ahead of the clock (a clock stepped back) counts from now, never extending max-stale.
  const takenAt = Math.min(header.takenAt, now);
  if (now - takenAt > o.maxStale) {
    for (const value of values) zeroize(value.plaintext);
    rings.forEach(releaseRing);
    return refuse('expired', `taken ${Math.round((now - takenAt) / 1000)}s ago, beyond max-stale (${Math.round(o.maxStale / 1000)}s)`);
  }
  let restored = 0;
  for (const value of values) {
    if (!o.allowed(value)) {
      zeroize(value.plaintext);
      continue;
    }
    o.restore(value, takenAt);
    restored += 1;
  }
  let restoredRings = 0;
  for (const ring of rings) {
    if (!o.allowed(ring)) {
      releaseRing(ring);
      continue;
    }
    o.restoreRing(ring, takenAt);
    restoredRings += 1;
  }
  for (const mark of rollouts) {
    const ref = refOf(mark.item);
    if (ref && o.allowed(ref)) o.restoreRollout?.(mark);
  }
  o.metrics.restoredValues.set(restored);
  o.logger.info({ values: restored, rings: restoredRings, storeId: header.position.storeId, revision: header.position.revision, ageSeconds: Math.round((now - takenAt) / 1000) }, 'snapshot restored; serving it stale-marked until the stream resumes');
  return { takenAt, position: header.position, values: restored, rings: restoredRings };
}

function refOf(item: string): ItemRef | undefined {
  try {
    return parseItemPath(item);
  } catch {
    return undefined;
  }
}
