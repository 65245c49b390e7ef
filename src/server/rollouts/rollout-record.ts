/**
 * A staged rollout as the server keeps it: the plan (steps, bake, bound on
 * unhealthy canaries), where it is (state, step, canaries, who is unhealthy)
 * and the candidate values, sealed. Converts to and from the stored row and
 * to the wire view (RolloutView); nothing here touches storage or the clock.
 */
import type { SealedWire } from '../../shared/crypto.ts';
import type { CanaryStatus, ItemKind, RolloutState, RolloutView } from '../../shared/protocol.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { RolloutRow } from '../store/store.ts';

/** States in which a rollout holds its items and canaries serve the candidate. */
export const ACTIVE_ROLLOUT_STATES: readonly RolloutState[] = ['rolling', 'paused'];

export const isActive = (state: RolloutState): boolean => ACTIVE_ROLLOUT_STATES.includes(state);

/**
 * One member of the candidate change set. A put is sealed under the
 * namespace's data key (`keyVersion`) with `rolloutAad`, so it opens only as
 * this rollout's candidate for this item and env; `env` '' is a whole-item delete.
 */
export type CandidateChange =
  | { readonly op: 'put'; readonly item: string; readonly env: string; readonly kind: ItemKind; readonly keyVersion: number; readonly sealed: SealedWire }
  | { readonly op: 'delete'; readonly item: string; readonly env: string };

export interface UnhealthyCanary {
  readonly agent: string;
  readonly reason: string;
}

export interface RolloutRecord {
  readonly id: string;
  readonly state: RolloutState;
  readonly steps: readonly number[];
  readonly step: number;
  readonly bakeSeconds: number;
  readonly maxUnhealthy: number;
  /** namespace/name of every member, in change order, each once. */
  readonly items: readonly string[];
  readonly canary: readonly string[];
  readonly unhealthy: readonly UnhealthyCanary[];
  readonly createdAt: Milliseconds;
  readonly createdBy: string;
  readonly stepStartedAt: Milliseconds;
  /**
   * The revision of the last change to who serves what (the touch events of a
   * step start, rollback or abort; the change set of completion): candidate
   * reads answer with it, so an agent that applied it never waits for it.
   */
  readonly revision: number;
  readonly reason?: string;
  readonly candidate: readonly CandidateChange[];
}

type RolloutDoc = Omit<RolloutRecord, 'id' | 'state' | 'candidate'>;

export function rolloutToRow(record: RolloutRecord, now: Milliseconds): Omit<RolloutRow, 'leaseOwner' | 'leaseUntil'> {
  const { id, state, candidate, ...doc } = record;
  return { id, state, doc: JSON.stringify(doc satisfies RolloutDoc), candidate: JSON.stringify(candidate), createdAt: record.createdAt, updatedAt: now };
}

export function rolloutFromRow(row: RolloutRow): RolloutRecord {
  const doc = JSON.parse(row.doc) as RolloutDoc;
  return { ...doc, id: row.id, state: row.state as RolloutState, candidate: JSON.parse(row.candidate) as CandidateChange[] };
}

export function percentOf(record: Pick<RolloutRecord, 'state' | 'steps' | 'step'>): number {
  return record.state === 'completed' ? 100 : (record.steps[record.step] ?? 0);
}

export function rolloutView(record: RolloutRecord, canaryStatus?: readonly CanaryStatus[]): RolloutView {
  return {
    id: record.id,
    state: record.state,
    step: record.step,
    steps: record.steps,
    percent: percentOf(record),
    items: record.items,
    canary: record.canary,
    unhealthy: record.unhealthy,
    bakeSeconds: record.bakeSeconds,
    maxUnhealthy: record.maxUnhealthy,
    createdAt: new Date(record.createdAt).toISOString(),
    stepStartedAt: new Date(record.stepStartedAt).toISOString(),
    ...(record.reason === undefined ? {} : { reason: record.reason }),
    ...(canaryStatus === undefined ? {} : { canaryStatus }),
  };
}

/** Binds a sealed candidate to its rollout, item, env and kind (a copy moved anywhere else fails to open). */
export function rolloutAad(id: string, item: string, env: string, kind: ItemKind): Buffer {
  return Buffer.from(JSON.stringify(['config-sidecar rollout candidate v1', id, item, env, kind]), 'utf8');
}
