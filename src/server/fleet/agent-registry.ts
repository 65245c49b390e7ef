/**
 * The fleet view: accepts agents' reports (checked, rate-bounded, capped per
 * subject) and answers who serves which revision. Reports live in the
 * control plane's report table (shared by PostgreSQL replicas), so every
 * replica gives the same answer; they never touch the event log or the
 * revision counter. An agent not heard from for `expiry` is dropped.
 */
import type { Clock } from '../../shared/clock.ts';
import { AppError } from '../../shared/errors.ts';
import { AGENT_ID_RE, HEALTH_REASON_MAX_CHARS, type AgentReport, type AgentsResponse, type ReportAck } from '../../shared/fleet-proto.ts';
import { validatePrefix } from '../../shared/paths.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { Principal } from '../auth/authenticator.ts';
import type { Policy } from '../auth/policy.ts';
import type { AgentReportRow, AgentReportTable } from '../store/agent-reports.ts';
import { heardFrom, isSilent, REPORT_INTERVAL_MS, silenceReason } from './report-silence.ts';

export { REPORT_INTERVAL_MS } from './report-silence.ts';

/** An agent silent this long is dropped from the view (--agent-expiry). */
export const AGENT_EXPIRY_DEFAULT_MS: Milliseconds = 10 * 60_000;
/** Live agents one subject may have (a leaked token cannot flood the table). */
export const AGENTS_PER_SUBJECT_MAX = 10_000;
/** Reports of one agent closer together than this are refused (the agent batches changes within it). */
export const REPORT_MIN_INTERVAL_MS: Milliseconds = 100;
/** Bounds on what one report may carry. */
export const REPORT_MAX_PREFIXES = 64;
export const REPORT_MAX_ROLLOUTS = 256;

export interface AgentRegistryOptions {
  readonly table: AgentReportTable;
  readonly clock: Clock;
  readonly policy: () => Policy;
  readonly currentRevision: () => Promise<number>;
  readonly expiry?: Milliseconds;
  readonly maxPerSubject?: number;
  /** Called after each accepted report (staged rollouts judge canaries' health at once). */
  readonly onReport?: (agentId: string) => void;
}

export function validateAgentId(id: string): string {
  if (!AGENT_ID_RE.test(id)) {
    throw new AppError('invalid_argument', 'An agent id is 1-253 characters of letters, digits, ".", "_", ":" and "-", starting with a letter or digit (--agent-id, CONFIG_SIDECAR_AGENT_ID; default POD_NAME, else the hostname).');
  }
  return id;
}

export class AgentRegistry {
  readonly #o: AgentRegistryOptions;
  readonly #expiry: Milliseconds;
  /** Last accepted report per agent id on this replica (the rate bound); pruned with the expiry. */
  readonly #lastAccepted = new Map<string, Milliseconds>();
  #lastPrune = 0;

  constructor(options: AgentRegistryOptions) {
    this.#o = options;
    this.#expiry = options.expiry ?? AGENT_EXPIRY_DEFAULT_MS;
  }

  get expiry(): Milliseconds {
    return this.#expiry;
  }

  /** Checks and stores one report. Throws AppError (invalid_argument, permission_denied, rate_limited, resource_exhausted). */
  async report(principal: Principal, report: AgentReport): Promise<ReportAck> {
    const now = this.#o.clock.now();
    const id = validateAgentId(report.agentId);
    if (principal.via === 'jwt' && principal.podName !== undefined && id !== principal.podName) {
      throw new AppError('permission_denied', `A service-account token of pod ${principal.podName} may only report as agent ${principal.podName}, not ${id}.`);
    }
    if (report.prefixes.length === 0 || report.prefixes.length > REPORT_MAX_PREFIXES) {
      throw new AppError('invalid_argument', `A report names 1-${REPORT_MAX_PREFIXES} prefixes.`);
    }
    if (report.rollouts.length > REPORT_MAX_ROLLOUTS) throw new AppError('invalid_argument', `A report carries at most ${REPORT_MAX_ROLLOUTS} rollouts.`);
    const prefixes = report.prefixes.map((p) => validatePrefix(p).replace(/\/+$/, ''));
    const policy = this.#o.policy();
    const denied = prefixes.filter((p) => !policy.allows(principal.identity, 'read', p));
    if (denied.length > 0) throw new AppError('permission_denied', `${principal.subject} may not read ${denied.join(', ')}, so it cannot report serving them.`);
    const since = now - this.#expiry;
    const existing = await this.#o.table.get(id);
    const live = existing !== undefined && existing.lastSeen >= since;
    if (live && existing.subject !== principal.subject) {
      throw new AppError('permission_denied', `Agent id ${id} is reported by another subject; each pod reports under its own id.`);
    }
    const last = this.#lastAccepted.get(id);
    if (last !== undefined && now - last < REPORT_MIN_INTERVAL_MS) {
      throw new AppError('rate_limited', `Agent ${id} reported less than ${REPORT_MIN_INTERVAL_MS} ms ago.`);
    }
    if (!live && (await this.#o.table.countForSubject(principal.subject, since)) >= (this.#o.maxPerSubject ?? AGENTS_PER_SUBJECT_MAX)) {
      throw new AppError('resource_exhausted', `${principal.subject} already has ${this.#o.maxPerSubject ?? AGENTS_PER_SUBJECT_MAX} live agents; older ones expire after ${this.#expiry / 1000} s.`);
    }
    this.#lastAccepted.set(id, now);
    await this.#o.table.upsert({
      id,
      subject: principal.subject,
      prefixes,
      appliedRevision: Math.max(0, Math.trunc(report.appliedRevision)),
      storeId: report.storeId.slice(0, 128),
      connected: report.connected,
      health: report.health,
      rollouts: report.rollouts.map((r) => ({ rollout: r.rollout.slice(0, 253), item: r.item.slice(0, 600), version: Math.max(0, Math.trunc(r.version)) })),
      appHealth: report.appHealth ?? 'unknown',
      appHealthRevision: Math.max(0, Math.trunc(report.appHealthRevision ?? 0)),
      ...(report.rendersFiles === true ? { rendersFiles: true, filesRevision: Math.max(0, Math.trunc(report.filesRevision ?? 0)) } : {}),
      healthReason: (report.healthReason ?? '').slice(0, HEALTH_REASON_MAX_CHARS),
      lastSeen: now,
    });
    this.#o.onReport?.(id);
    await this.#prune(now);
    return { currentRevision: await this.#o.currentRevision(), nextReportMs: REPORT_INTERVAL_MS };
  }

  /**
   * Agents not yet expired passing `visible`, with their lag against the
   * current revision; one whose reports stopped (report-silence.ts) is shown
   * silent and not connected, whatever its last report said.
   */
  async list(visible: (row: AgentReportRow) => boolean): Promise<AgentsResponse> {
    const now = this.#o.clock.now();
    const [rows, currentRevision] = await Promise.all([this.#o.table.seenSince(now - this.#expiry), this.#o.currentRevision()]);
    const agents = rows.filter(visible).map((row) => {
      const silent = isSilent(row.lastSeen, now);
      return {
        id: row.id,
        subject: row.subject,
        prefixes: row.prefixes,
        appliedRevision: row.appliedRevision,
        lag: Math.max(0, currentRevision - row.appliedRevision),
        connected: heardFrom(row, now).connected,
        silent,
        ...(silent ? { silentReason: silenceReason(row.lastSeen, now) } : {}),
        lastSeen: new Date(row.lastSeen).toISOString(),
        health: row.health,
        rollouts: row.rollouts,
        appHealth: row.appHealth ?? 'unknown',
        ...(row.healthReason ? { healthReason: row.healthReason } : {}),
      };
    });
    return { currentRevision, agents };
  }

  /** Drops expired reports (in the table and the rate map) at most once per expiry/10. */
  async #prune(now: Milliseconds): Promise<void> {
    if (now - this.#lastPrune < this.#expiry / 10) return;
    this.#lastPrune = now;
    for (const [id, at] of this.#lastAccepted) if (now - at > this.#expiry) this.#lastAccepted.delete(id);
    await this.#o.table.dropSeenBefore(now - this.#expiry);
  }
}
