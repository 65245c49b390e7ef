/**
 * The application's own health signal, the third health level a staged
 * rollout judges canaries by: posted by the application (POST /v1/health on
 * the socket or the token-protected TCP listener) and/or probed by the agent
 * (--app-health-url, loopback only). Each observation carries the agent's
 * applied revision then, so a rollout counts only what was observed after
 * the change that made this agent a canary.
 */
import { AppError } from '../shared/errors.ts';
import { boolean, checked, field, onlyKeys, optional, record, ShapeError, string } from '../shared/shape-check.ts';
import { HEALTH_REASON_MAX_CHARS, type AppHealth } from '../shared/fleet-proto.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Milliseconds } from '../shared/units.ts';

/** How often --app-health-url is probed. */
export const APP_HEALTH_PROBE_INTERVAL_MS: Milliseconds = 2_000;
/** A probe not answered within this is unhealthy. */
export const APP_HEALTH_PROBE_TIMEOUT_MS: Milliseconds = 1_000;

const PRINTABLE_RE = /^[\x20-\x7e]*$/;

/** The POST /v1/health body, checked by hand (the agent does not load zod). */
function readHealthBody(value: unknown): { healthy: boolean; reason?: string | undefined } {
  const o = record(value, 'body');
  onlyKeys(o, ['healthy', 'reason'], 'body');
  const reason = field(o, 'reason', '', (v, p) => optional(v, p, string));
  if (reason !== undefined && reason.length > HEALTH_REASON_MAX_CHARS) throw new ShapeError(`reason: at most ${HEALTH_REASON_MAX_CHARS} characters, received ${reason.length}`);
  if (reason !== undefined && !PRINTABLE_RE.test(reason)) throw new ShapeError('reason: printable ASCII only');
  return { healthy: field(o, 'healthy', '', boolean), reason };
}

export interface AppHealthState {
  readonly appHealth: AppHealth;
  readonly reason: string;
  /** The agent's applied revision at the last observation (0: none yet). */
  readonly revision: number;
}

/** Parses a POST /v1/health body; a clear 400 for anything else. */
export function parseHealthBody(body: Buffer): { healthy: boolean; reason: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    throw new AppError('invalid_json', 'POST /v1/health takes JSON: {"healthy": true|false, "reason"?: "..."}.');
  }
  const parsed = checked(() => readHealthBody(raw));
  if (!parsed.ok) {
    throw new AppError('invalid_argument', `The health body is invalid: ${parsed.error}; send {"healthy": true|false, "reason"?: at most ${HEALTH_REASON_MAX_CHARS} printable characters}.`);
  }
  return { healthy: parsed.value.healthy, reason: parsed.value.reason ?? '' };
}

export class AppHealthSignal {
  #state: AppHealthState = { appHealth: 'unknown', reason: '', revision: 0 };
  readonly #onChange: () => void;
  readonly #applied: () => number;

  /** `applied` is the agent's applied revision; `onChange` runs when the state or its revision moved (report it). */
  constructor(onChange: () => void, applied: () => number) {
    this.#onChange = onChange;
    this.#applied = applied;
  }

  get state(): AppHealthState {
    return this.#state;
  }

  /** An observation (a POST, a probe): the same answer at a newer applied revision is news too. */
  set(healthy: boolean, reason: string): void {
    const next: AppHealthState = { appHealth: healthy ? 'healthy' : 'unhealthy', reason: healthy ? '' : reason.slice(0, HEALTH_REASON_MAX_CHARS), revision: this.#applied() };
    if (next.appHealth === this.#state.appHealth && next.reason === this.#state.reason && next.revision === this.#state.revision) return;
    this.#state = next;
    this.#onChange();
  }
}

/** Probes `url` every interval: 2xx healthy, anything else (or no answer in time) unhealthy with the reason. */
export function startAppHealthProbe(url: string, signal: AppHealthSignal, clock: Clock, intervalMs: Milliseconds = APP_HEALTH_PROBE_INTERVAL_MS): { close(): void } {
  let timer: TimerHandle | undefined;
  let closed = false;
  const probe = async (): Promise<void> => {
    try {
      const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(APP_HEALTH_PROBE_TIMEOUT_MS) });
      await res.body?.cancel();
      if (res.status >= 200 && res.status < 300) signal.set(true, '');
      else signal.set(false, `probe ${new URL(url).pathname} answered ${res.status}`);
    } catch (err) {
      const name = (err as Error).name === 'TimeoutError' ? `no answer within ${APP_HEALTH_PROBE_TIMEOUT_MS} ms` : 'connection failed';
      signal.set(false, `probe ${new URL(url).pathname}: ${name}`);
    }
  };
  const loop = (): void => {
    void probe().finally(() => {
      if (!closed) timer = clock.setTimeout(loop, intervalMs);
    });
  };
  loop();
  return {
    close() {
      closed = true;
      timer?.cancel();
    },
  };
}
