/**
 * Staged rollouts: starts them (choosing the first step's canaries), answers
 * who is a canary for the item read path, applies operators' promote / pause /
 * resume / abort, and drives active rollouts: on every agent report and on a
 * short tick it judges the canaries' health (health-verdict.ts) and rolls
 * back, advances or completes. Every transition is one store transaction
 * (control plane), so state survives a restart; on PostgreSQL one replica
 * drives a rollout at a time, by a lease in the database that another takes
 * over when it lapses. Operators' actions need no lease: they commit in the
 * same serialised transactions and the driver re-reads before it acts.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import { AppError, describeError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { ItemRef } from '../../shared/paths.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { Principal } from '../auth/authenticator.ts';
import type { ChangeOp, ControlPlane, RolloutChange } from '../control-plane.ts';
import type { AgentReportRow, AgentReportTable } from '../store/agent-reports.ts';
import { chooseCanaries, eligibleAgents } from './canary-selection.ts';
import { canaryStatuses, healthVerdict, type CanaryReport, type Verdict } from './health-verdict.ts';
import type { CanaryStatus, RolloutState } from '../../shared/protocol.ts';
import { isActive, type RolloutRecord } from './rollout-record.ts';
import { heardFrom, isSilent, SILENT_AFTER_MS } from '../fleet/report-silence.ts';

/** How often active rollouts are judged without a report to prompt it (bake ends, lapsed leases). */
export const ROLLOUT_TICK_MS: Milliseconds = 500;
/** Drives start at least this far apart, however many canary reports arrive. */
export const ROLLOUT_DRIVE_GAP_MS: Milliseconds = 100;
/** How long a replica's drive lease lasts; renewed every tick, taken over after it lapses. */
export const ROLLOUT_LEASE_MS: Milliseconds = 5_000;
/** Most rollouts GET /v1/rollouts lists (newest first). */
export const ROLLOUTS_LIST_MAX = 200;
/** Who the audit names for the driver's own transitions. */
export const ROLLOUT_CONTROLLER = 'rollout-controller';

export type RolloutAction = 'promote' | 'pause' | 'resume' | 'abort';

export interface RolloutServiceOptions {
  readonly controlPlane: ControlPlane;
  readonly reports: AgentReportTable;
  /** Reports older than this are gone (the agent registry's --agent-expiry). */
  readonly agentExpiry: Milliseconds;
  readonly clock: Clock;
  readonly logger: Logger;
  /** This replica's lease owner id; random per process by default. */
  readonly owner?: string;
  readonly tickMs?: Milliseconds;
  /** Counts transitions by the state entered (metrics.ts `rolloutTransitions`). */
  readonly onTransition?: (state: RolloutState) => void;
}

export interface RolloutStartInput {
  readonly steps: readonly number[];
  readonly bakeSeconds: number;
  readonly maxUnhealthy: number;
  readonly changes: readonly ChangeOp[];
}

function checkSteps(steps: readonly number[]): void {
  for (let i = 1; i < steps.length; i++) {
    if ((steps[i] as number) <= (steps[i - 1] as number)) throw new AppError('invalid_argument', `steps must increase (steps.${i} is ${steps[i]} after ${steps[i - 1]}).`);
  }
  if (steps.at(-1) !== 100) throw new AppError('invalid_argument', 'The last step must be 100 (the rollout completes there).');
}

const sameUnhealthy = (a: RolloutRecord['unhealthy'], b: RolloutRecord['unhealthy']): boolean =>
  a.length === b.length && a.every((u, i) => u.agent === b[i]?.agent && u.reason === b[i]?.reason);

export class RolloutService {
  readonly #o: RolloutServiceOptions;
  readonly #owner: string;
  #timer: TimerHandle | undefined;
  #driving: Promise<void> | undefined;
  #gap: TimerHandle | undefined;
  #lastDrive = -Infinity;
  #again = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Rollouts whose lease this replica held at its last drive (a takeover is logged once). */
  #held = new Set<string>();
  /** Canaries of the active rollouts this replica last judged: only their reports prompt a drive. */
  #canaries = new Set<string>();
  /**
   * When this replica first saw each agent's stream down, for the verdict's
   * grace. In memory on purpose: a restarted or new driver starts the grace
   * afresh, as the agents reconnect to it.
   */
  #downSince = new Map<string, Milliseconds>();
  /** When this replica started driving: a silent canary's grace starts no earlier (a restarted replica's agents reconnect to it). */
  #drivingSince: Milliseconds | undefined;

  constructor(options: RolloutServiceOptions) {
    this.#o = options;
    this.#owner = options.owner ?? `replica-${randomBytes(6).toString('hex')}`;
  }

  async #liveReports(): Promise<AgentReportRow[]> {
    return this.#o.reports.seenSince(this.#o.clock.now() - this.#o.agentExpiry);
  }

  /** Live reports with a silent agent's stream counted down: the canaries a step picks. */
  async #heardReports(): Promise<AgentReportRow[]> {
    const now = this.#o.clock.now();
    return (await this.#liveReports()).map((r) => heardFrom(r, now));
  }

  async start(input: RolloutStartInput, actor: string): Promise<RolloutRecord> {
    checkSteps(input.steps);
    const id = `ro-${randomBytes(6).toString('hex')}`;
    const items = [...new Set(input.changes.map((c) => `${c.ref.namespace}/${c.ref.name}`))];
    const first = input.steps[0] as number;
    const canary = first >= 100 ? [] : chooseCanaries(id, eligibleAgents(await this.#heardReports(), items), first);
    let record = await this.#o.controlPlane.startRollout({ id, steps: input.steps, bakeSeconds: input.bakeSeconds, maxUnhealthy: input.maxUnhealthy, changes: input.changes, canary }, actor);
    this.#o.logger.info({ rollout: id, items, step: 0, percent: first, canary }, 'rollout started');
    this.#o.onTransition?.('rolling');
    if (first >= 100) {
      record = await this.#o.controlPlane.changeRollout(id, (r) => (isActive(r.state) ? { record: r, complete: true } : undefined), actor);
      this.#o.onTransition?.(record.state);
    }
    this.poke();
    return record;
  }

  /** Each active rollout's canaries, level by level (rollout status, the status page); finished ones have none. */
  async canaryStatus(records: readonly RolloutRecord[]): Promise<Map<string, CanaryStatus[]>> {
    const active = records.filter((r) => isActive(r.state) && r.canary.length > 0);
    if (active.length === 0) return new Map();
    const reports = new Map((await this.#liveReports()).map((r) => [r.id, canaryReportOf(r)]));
    const now = this.#o.clock.now();
    return new Map(active.map((r) => [r.id, canaryStatuses(r, reports, now)]));
  }

  async get(id: string): Promise<RolloutRecord> {
    const record = await this.#o.controlPlane.getRollout(id);
    if (!record) throw new AppError('not_found', `There is no rollout ${id}.`);
    return record;
  }

  list(): Promise<RolloutRecord[]> {
    return this.#o.controlPlane.listRollouts(ROLLOUTS_LIST_MAX);
  }

  /** An operator's action; a state it does not apply to is a conflict naming the state. */
  async act(id: string, action: RolloutAction, actor: string): Promise<RolloutRecord> {
    const now = this.#o.clock.now();
    const refuse = (r: RolloutRecord): never => {
      throw new AppError('conflict', `Rollout ${id} is ${r.state}; ${action} applies to ${action === 'pause' ? 'a rolling' : action === 'resume' ? 'a paused' : 'an active (rolling or paused)'} rollout.`);
    };
    const record = await this.#o.controlPlane.changeRollout(
      id,
      (r): RolloutChange => {
        switch (action) {
          case 'promote':
            return isActive(r.state) ? { record: { ...r, step: r.steps.length - 1 }, complete: true } : refuse(r);
          case 'pause':
            return r.state === 'rolling' ? { record: { ...r, state: 'paused' } } : refuse(r);
          case 'resume':
            // The bake starts again: time paused is not time observed.
            return r.state === 'paused' ? { record: { ...r, state: 'rolling', stepStartedAt: now } } : refuse(r);
          case 'abort':
            return isActive(r.state) ? { record: { ...r, state: 'aborted', reason: `aborted by ${actor}` }, touch: r.canary.length > 0 } : refuse(r);
        }
      },
      actor,
    );
    this.#o.logger.info({ rollout: id, action, state: record.state, subject: actor }, `rollout ${action}`);
    this.#o.onTransition?.(record.state);
    return record;
  }

  /**
   * The rollout whose candidate `agentId` serves for this item, when the
   * caller is that agent: a pod-bound service-account token names its pod;
   * otherwise a live report of the agent must come from the same subject (the
   * rule the Report RPC applies). An agent with no report yet (the embedded
   * store keeps reports in memory, so a restarted server has none while the
   * agents refetch) is believed: the caller may read the item, and with it the
   * candidate through ?rollout= anyway, so the check guards correctness, not
   * secrecy.
   */
  async candidateFor(ref: ItemRef, agentId: string, principal: Principal): Promise<string | undefined> {
    const record = await this.#o.controlPlane.activeRolloutOf(ref);
    if (!record || !record.canary.includes(agentId)) return undefined;
    if (principal.via === 'jwt' && principal.podName !== undefined) return principal.podName === agentId ? record.id : undefined;
    const row = await this.#o.reports.get(agentId);
    return !row || row.lastSeen < this.#o.clock.now() - this.#o.agentExpiry || row.subject === principal.subject ? record.id : undefined;
  }

  /** An agent's report was accepted: a canary's health may have changed (others wait for the tick). */
  reported(agentId: string): void {
    if (this.#canaries.has(agentId)) this.poke();
  }

  /** Judge soon (a canary reported, a rollout started, the tick); coalesced, and at most one drive per ROLLOUT_DRIVE_GAP_MS. */
  poke(): void {
    if (this.#closed) return;
    if (this.#driving || this.#gap) {
      this.#again = true;
      return;
    }
    const wait = this.#lastDrive + ROLLOUT_DRIVE_GAP_MS - this.#o.clock.now();
    if (wait > 0) {
      this.#gap = this.#o.clock.setTimeout(() => {
        this.#gap = undefined;
        this.poke();
      }, wait);
      return;
    }
    this.#lastDrive = this.#o.clock.now();
    this.#driving = this.#drive().finally(() => {
      this.#driving = undefined;
      if (this.#again) {
        this.#again = false;
        this.poke();
      }
    });
  }

  startDriving(): void {
    this.#drivingSince ??= this.#o.clock.now();
    const tick = (): void => {
      this.#timer = this.#o.clock.setTimeout(() => {
        this.poke();
        if (!this.#closed) tick();
      }, this.#o.tickMs ?? ROLLOUT_TICK_MS);
    };
    tick();
    this.poke();
  }

  async #drive(): Promise<void> {
    try {
      const ids = await this.#o.controlPlane.activeRolloutIds();
      if (ids.length === 0) {
        this.#canaries.clear();
        this.#held.clear();
        this.#downSince.clear();
        return;
      }
      for (const id of this.#held) if (!ids.includes(id)) this.#held.delete(id);
      const canaries = new Set<string>();
      const reports = await this.#liveReports();
      const now = this.#o.clock.now();
      const down = new Map<string, Milliseconds>();
      for (const r of reports) if (!r.connected) down.set(r.id, this.#downSince.get(r.id) ?? now);
      this.#downSince = down;
      const drivingSince = this.#drivingSince ?? now;
      const downSince = (r: AgentReportRow): Milliseconds | undefined => (isSilent(r.lastSeen, now) ? Math.max(r.lastSeen + SILENT_AFTER_MS, drivingSince) : down.get(r.id));
      const byId = new Map(reports.map((r) => [r.id, { ...canaryReportOf(r), downSince: downSince(r) }]));
      for (const id of ids) {
        if (this.#closed) return;
        if (!(await this.#o.controlPlane.takeRolloutLease(id, this.#owner, ROLLOUT_LEASE_MS))) {
          this.#held.delete(id);
          continue;
        }
        if (!this.#held.has(id)) {
          this.#held.add(id);
          this.#o.logger.info({ rollout: id, owner: this.#owner }, 'rollout lease taken: this replica drives it');
        }
        const record = await this.#o.controlPlane.getRollout(id);
        if (!record || !isActive(record.state)) continue;
        for (const agent of record.canary) canaries.add(agent);
        await this.#apply(record, healthVerdict(record, byId, this.#o.clock.now()), reports);
      }
      this.#canaries = canaries;
    } catch (err) {
      this.#o.logger.error({ err: describeError(err) }, 'driving rollouts failed; retrying on the next tick');
    }
  }

  async #apply(seen: RolloutRecord, verdict: Verdict, reports: readonly AgentReportRow[]): Promise<void> {
    const cp = this.#o.controlPlane;
    const now = this.#o.clock.now();
    // Acts only on the record it judged: an operator's action in between wins.
    const unchanged = (r: RolloutRecord): boolean => r.state === seen.state && r.step === seen.step && r.stepStartedAt === seen.stepStartedAt;
    if (verdict.kind === 'rollback') {
      const record = await cp.changeRollout(
        seen.id,
        (r) => (unchanged(r) ? { record: { ...r, state: 'rolled_back', unhealthy: verdict.unhealthy, reason: verdict.reason }, touch: r.canary.length > 0 } : undefined),
        ROLLOUT_CONTROLLER,
      );
      if (record.state !== 'rolled_back') return;
      this.#o.onTransition?.('rolled_back');
      this.#o.logger.warn({ rollout: seen.id, items: seen.items, reason: verdict.reason }, 'rollout rolled back');
      await this.#audit(seen, 'error', `rolled back: ${verdict.reason}`);
      return;
    }
    if (verdict.kind === 'hold') {
      if (!sameUnhealthy(verdict.unhealthy, seen.unhealthy)) {
        await cp.changeRollout(seen.id, (r) => (unchanged(r) ? { record: { ...r, unhealthy: verdict.unhealthy } } : undefined), ROLLOUT_CONTROLLER);
      }
      return;
    }
    const step = seen.step + 1;
    const percent = seen.steps[step] ?? 100;
    if (percent >= 100) {
      const record = await cp.changeRollout(seen.id, (r) => (unchanged(r) ? { record: { ...r, step: r.steps.length - 1, unhealthy: verdict.unhealthy }, complete: true } : undefined), ROLLOUT_CONTROLLER);
      if (record.state === 'completed') {
        this.#o.onTransition?.('completed');
        this.#o.logger.info({ rollout: seen.id, items: seen.items, revision: record.revision }, 'rollout completed');
        await this.#audit(seen, 'ok', `completed at revision ${record.revision}`);
      }
      return;
    }
    const canary = chooseCanaries(seen.id, eligibleAgents(reports.map((r) => heardFrom(r, now)), seen.items), percent, seen.canary);
    const added = canary.length !== seen.canary.length;
    await cp.changeRollout(seen.id, (r) => (unchanged(r) ? { record: { ...r, step, canary, stepStartedAt: now, unhealthy: verdict.unhealthy }, touch: added } : undefined), ROLLOUT_CONTROLLER);
    this.#o.logger.info({ rollout: seen.id, step, percent, canary }, 'rollout step started');
  }

  async #audit(record: RolloutRecord, outcome: 'ok' | 'error', detail: string): Promise<void> {
    try {
      await this.#o.controlPlane.audit({ subject: ROLLOUT_CONTROLLER, action: 'rollout', target: `${record.id}: ${record.items.join(',')}`.slice(0, 400), outcome, detail });
    } catch (err) {
      this.#o.logger.error({ err: describeError(err), rollout: record.id }, 'audit write failed');
    }
  }

  /**
   * Stops driving and frees this replica's leases, so another replica takes
   * its rollouts over on its next tick instead of after ROLLOUT_LEASE_MS (a
   * replica stopping gracefully); a replica that dies leaves them to lapse.
   * Twice is harmless.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#timer?.cancel();
    this.#gap?.cancel();
    await this.#driving;
    this.#held.clear();
    try {
      const released = await this.#o.controlPlane.releaseRolloutLeases(this.#owner);
      if (released > 0) this.#o.logger.info({ owner: this.#owner, released }, 'rollout leases released: another replica drives them now');
    } catch (err) {
      this.#o.logger.warn({ err: describeError(err), owner: this.#owner }, 'releasing rollout leases failed; another replica takes them over when they lapse');
    }
  }
}

function canaryReportOf(r: AgentReportRow): CanaryReport {
  return { ...r, appHealth: r.appHealth ?? 'unknown', appHealthRevision: r.appHealthRevision ?? 0, healthReason: r.healthReason ?? '' };
}
