/**
 * Warm restart (issue 19), assembled for the agent: the directory check, the
 * key, the restore of a valid snapshot into the cache and the applier, and
 * the snapshotter that keeps it current from then on (fed by the
 * applied-events hub: a deletion or resync rewrites it at once, any other
 * change by the next interval). Loaded only with `--snapshot-dir`.
 */
import { mkdir } from 'node:fs/promises';
import type { MetricsRegistry } from '../../shared/metrics/registry.ts';
import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/logger.ts';
import type { RolloutVersion } from '../../shared/fleet-proto.ts';
import { namespaceMatchesAny } from '../../shared/paths.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { AgentSettings } from '../agent-settings.ts';
import { AGENT_SETTING_LABELS } from '../agent-setting-labels.ts';
import type { AppliedEvent, AppliedEventsHub, AppliedEventsSubscription } from '../applied-events.ts';
import type { EventApplier } from '../event-applier.ts';
import { retain, type CachedValue, type ValueCache } from '../value-cache.ts';
import { checkWritableDir } from '../volume-access.ts';
import { loadSnapshotKey, snapshotFileBytes } from './snapshot-files.ts';
import type { RingStore } from '../ring-store.ts';
import { scopeOf, sealedMarkOf, sealedRingOf } from './snapshot-format.ts';
import { createSnapshotMetrics } from './snapshot-metrics.ts';
import { restoreSnapshot, type RestoredSnapshot } from './snapshot-restore.ts';
import { Snapshotter } from './snapshotter.ts';

export { observeDrops } from './snapshotter.ts';

/**
 * After a restore, stale reads do not revalidate for this long: the stream's
 * first attempt resumes (and vouches for the values) well within it; after
 * it, a stale read revalidates as in any outage. The prefetch's own wait for
 * the stream (PREFETCH_STREAM_WAIT_MS in agent.ts) is as long.
 */
export const RESTORE_QUIET_MS: Milliseconds = 3_000;

export interface WarmRestartOptions {
  readonly dir: string;
  readonly settings: Pick<AgentSettings, 'prefix' | 'env' | 'server' | 'maxStale' | 'snapshotInterval'>;
  readonly cache: ValueCache;
  /** Key rings (issue 20), kept in the snapshot next to the values. */
  readonly rings: Pick<RingStore, 'held' | 'restore'>;
  /** Which rollouts' candidates the agent serves (the fleet report's), kept with the values. */
  readonly rollouts?: { list(): RolloutVersion[]; restored(mark: RolloutVersion): void };
  readonly applier: EventApplier;
  readonly hub: AppliedEventsHub;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly registry: MetricsRegistry;
  /** When the stream was lost (undefined while connected): the snapshot's time while it is down. */
  streamDownSince(): Milliseconds | undefined;
  connected(): boolean;
}

export async function startWarmRestart(o: WarmRestartOptions): Promise<{ restored: RestoredSnapshot | undefined; snapshotter: Snapshotter }> {
  const { dir, settings, cache, applier, clock, logger } = o;
  // A snapshot directory the agent cannot write is a start-up error naming the setting, not a write failing every interval.
  await checkWritableDir(dir, AGENT_SETTING_LABELS.snapshotDir ?? '--snapshot-dir');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const metrics = createSnapshotMetrics(o.registry);
  const { key, origin } = await loadSnapshotKey(dir);
  if (origin !== 'read') logger.info({ dir, origin }, origin === 'created' ? 'snapshot key created' : 'snapshot key file was malformed; replaced');
  const scope = scopeOf(settings.prefix, settings.env, settings.server);
  const restored = await restoreSnapshot({
    dir,
    key,
    scope,
    clock,
    maxStale: settings.maxStale,
    logger,
    metrics,
    allowed: (ref) => namespaceMatchesAny(ref.namespace, settings.prefix),
    restore: (value, takenAt) => {
      const { kind, version, revision, etag, plaintext } = value;
      cache.restore({ namespace: value.namespace, name: value.name }, value.env, { kind, version, revision, etag, plaintext }, takenAt, clock.now() + RESTORE_QUIET_MS);
    },
    restoreRing: (ring, takenAt) => o.rings.restore(ring, takenAt),
    restoreRollout: (mark) => o.rollouts?.restored(mark),
  });
  if (restored) applier.restore(restored.position);
  // Another store behind the same --server (a restore, a reset) only shows on the first stream: the
  // applier then drops everything as for any store change; this names it as the snapshot's refusal.
  let storeCheck = restored?.position.storeId || undefined;
  metrics.bytes.set(await snapshotFileBytes(dir));

  const snapshotter = new Snapshotter({
    dir,
    key,
    scope,
    interval: settings.snapshotInterval,
    clock,
    logger,
    metrics,
    connected: o.connected,
    collect: () => {
      const position = applier.position;
      // Before the stream first said where the agent is, nothing cached can be vouched for.
      if (!position) return undefined;
      if (o.connected() && position.storeId === storeCheck) storeCheck = undefined;
      const values: CachedValue[] = [];
      for (const variant of cache.variants()) {
        // What a read would serve now: expired and superseded values are left out.
        const held = cache.peek(variant.ref, variant.env);
        if (!held) continue;
        retain(held.value);
        values.push(held.value);
      }
      return { takenAt: o.streamDownSince() ?? clock.now(), position, values, rings: o.rings.held().map(sealedRingOf), rollouts: (o.rollouts?.list() ?? []).map(sealedMarkOf) };
    },
  });
  snapshotter.start();
  void follow(o.hub.subscribe(), snapshotter, (event) => {
    if (storeCheck === undefined) return;
    const now = applier.position?.storeId;
    if (event.type === 'resync' && now && now !== storeCheck) {
      metrics.refused.inc({ reason: 'foreign-store' });
      logger.warn({ snapshotStore: storeCheck, serverStore: now }, 'snapshot was from another store; its values are dropped');
    }
    // Only the first stream after the restore can tell: a later store change is the server's, not the snapshot's.
    if (event.type === 'resync' || o.connected()) storeCheck = undefined;
  });
  return { restored, snapshotter };
}

/** Deletions and resyncs (values dropped) rewrite the snapshot now; other changes by the next interval. */
async function follow(subscription: AppliedEventsSubscription, snapshotter: Snapshotter, seen: (event: AppliedEvent) => void): Promise<void> {
  for await (const event of subscription) {
    seen(event);
    if (event.type === 'deleted' || event.type === 'resync') snapshotter.requestNow();
    else snapshotter.changed();
  }
}
