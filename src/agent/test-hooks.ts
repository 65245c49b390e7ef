/**
 * Opt-in debug routes for tests that drive a REAL agent process
 * (`CONFIG_SIDECAR_TEST_HOOKS=1`, refused with `NODE_ENV=production`, logged
 * as a warning). They live on the admin listener and let a test move the
 * agent's clock and hold an upstream fetch for one key, so the fill /
 * invalidate race and max-stale are reproduced without sleeping.
 *
 *   POST /debug/clock/advance?ms=N        move the agent's OffsetClock (and its fleet reporter's) forward
 *   POST /debug/clock/advance?ms=N&clock=report
 *                                         move only the fleet reporter's clock: its report falls due as
 *                                         it would after N ms, without the stream's heartbeat watchdog
 *                                         firing (tests that move the server's clock keep reports fresh)
 *   POST /debug/hold?key=ns/name          hold the next fetches of the key after the server answered
 *   GET  /debug/held?key=ns/name          long-poll: resolves once a fetch of the key is being held
 *   POST /debug/release?key=ns/name       let held fetches continue
 *   GET  /debug/state                     applied revision, stream state, cache size
 *   GET  /debug/wait-revision?atLeast=N   long-poll until the agent applied revision N
 *   POST /debug/stream/pause              end the Watch stream and stay disconnected
 *   POST /debug/stream/resume             reconnect now (resuming from the applied revision)
 *   POST /debug/stream/split?deliver=N    pass N more item events to the agent, then hold every later message
 *   GET  /debug/stream/split-reached      long-poll: resolves once the N events passed
 *   POST /debug/stream/unsplit            deliver the held messages in order and stop holding
 *
 * `CONFIG_SIDECAR_TEST_APPLY_SETS=members` (with the hooks only) applies the
 * members of a change set one by one, as an agent without the assembler
 * would, so a test can show that it notices the difference.
 * `CONFIG_SIDECAR_TEST_CONFIG_VALIDATOR=FILE` (with the hooks only) runs FILE
 * as the `--config` reload's validator child (agent/config-validator.ts), so
 * a test can have that child die as the OOM killer would kill it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OffsetClock } from '../shared/clock.ts';
import { AppError } from '../shared/errors.ts';
import { sendJson } from '../shared/http-io.ts';
import { SettingError } from '../shared/settings.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { FetchGate } from './value-source.ts';
import type { WatchEvent } from '../shared/watch-proto.ts';

export const TEST_HOOKS_ENV = 'CONFIG_SIDECAR_TEST_HOOKS';
export const TEST_APPLY_SETS_ENV = 'CONFIG_SIDECAR_TEST_APPLY_SETS';
export const TEST_CONFIG_VALIDATOR_ENV = 'CONFIG_SIDECAR_TEST_CONFIG_VALIDATOR';
/** Longest a long-poll debug route waits. */
const LONG_POLL_MS: Milliseconds = 30_000;
const WAIT_POLL_MS: Milliseconds = 10;

/** Whether test hooks are on; refuses the combination with a production NODE_ENV. */
export function testHooksEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env[TEST_HOOKS_ENV] !== '1') return false;
  if (env.NODE_ENV === 'production') {
    throw new SettingError(TEST_HOOKS_ENV, 'test hooks cannot be enabled with NODE_ENV=production');
  }
  return true;
}

interface Hold {
  held: boolean;
  waiting: Array<() => void>;
  onHeld: Array<() => void>;
}

/** Holds fetched envelopes for chosen keys until released. */
export class HoldGate implements FetchGate {
  readonly #holds = new Map<string, Hold>();

  #get(key: string): Hold {
    let hold = this.#holds.get(key);
    if (!hold) {
      hold = { held: false, waiting: [], onHeld: [] };
      this.#holds.set(key, hold);
    }
    return hold;
  }

  afterFetch(key: string): Promise<void> {
    const hold = this.#holds.get(key);
    if (!hold?.held) return Promise.resolve();
    return new Promise((resolve) => {
      hold.waiting.push(resolve);
      for (const notify of hold.onHeld.splice(0)) notify();
    });
  }

  hold(key: string): void {
    this.#get(key).held = true;
  }

  release(key: string): number {
    const hold = this.#get(key);
    hold.held = false;
    const waiting = hold.waiting.splice(0);
    for (const resume of waiting) resume();
    return waiting.length;
  }

  /** Resolves once at least one fetch of the key is being held. */
  whenHeld(key: string): Promise<void> {
    const hold = this.#get(key);
    if (hold.waiting.length > 0) return Promise.resolve();
    return new Promise((resolve) => hold.onHeld.push(resolve));
  }
}

/** Holds the stream's messages after the next N item events, as a network stall between two messages would. */
export class StreamSplit {
  #remaining: number | undefined;
  #held: WatchEvent[] = [];
  #onReached: Array<() => void> = [];

  pass(event: WatchEvent, deliver: (event: WatchEvent) => void): void {
    if (this.#remaining === undefined) {
      deliver(event);
      return;
    }
    if (this.#remaining === 0) {
      this.#held.push(event);
      return;
    }
    if (event.type === 'itemChanged' || event.type === 'itemDeleted') this.#remaining -= 1;
    deliver(event);
    if (this.#remaining === 0) for (const notify of this.#onReached.splice(0)) notify();
  }

  split(deliver: number): void {
    this.#remaining = deliver;
  }

  whenReached(): Promise<void> {
    if (this.#remaining === 0) return Promise.resolve();
    return new Promise((resolve) => this.#onReached.push(resolve));
  }

  unsplit(deliver: (event: WatchEvent) => void): number {
    this.#remaining = undefined;
    const held = this.#held.splice(0);
    for (const event of held) deliver(event);
    return held.length;
  }
}

export interface TestHookDeps {
  readonly clock: OffsetClock;
  /** The fleet reporter's clock. */
  readonly reportClock: OffsetClock;
  readonly gate: HoldGate;
  readonly state: () => Record<string, unknown>;
  readonly appliedRevision: () => number;
  readonly stream: { pause(): void; resume(): void };
  readonly split: StreamSplit;
  /** Where held stream messages go on unsplit. */
  readonly deliver: (event: WatchEvent) => void;
}

function withTimeout(promise: Promise<void>, ms: Milliseconds): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export function createTestHookRoutes(deps: TestHookDeps): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  return async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://agent');
    if (!url.pathname.startsWith('/debug/')) return false;
    const key = url.searchParams.get('key') ?? '';
    switch (`${req.method} ${url.pathname}`) {
      case 'POST /debug/clock/advance': {
        const ms = Number(url.searchParams.get('ms'));
        if (!Number.isFinite(ms) || ms < 0) throw new AppError('bad_request', 'ms must be a non-negative number');
        const which = url.searchParams.get('clock') ?? 'all';
        if (which !== 'all' && which !== 'report') throw new AppError('bad_request', 'clock must be "report" (only the fleet reporter\'s) or absent (every clock)');
        if (which === 'all') deps.clock.advance(ms);
        deps.reportClock.advance(ms);
        sendJson(res, 200, { now: deps.clock.now(), reportNow: deps.reportClock.now() });
        return true;
      }
      case 'POST /debug/hold':
        deps.gate.hold(key);
        sendJson(res, 200, { held: key });
        return true;
      case 'GET /debug/held': {
        const ok = await withTimeout(deps.gate.whenHeld(key), LONG_POLL_MS);
        sendJson(res, ok ? 200 : 408, { held: ok });
        return true;
      }
      case 'POST /debug/release':
        sendJson(res, 200, { released: deps.gate.release(key) });
        return true;
      case 'POST /debug/stream/pause':
        deps.stream.pause();
        sendJson(res, 200, { paused: true });
        return true;
      case 'POST /debug/stream/resume':
        deps.stream.resume();
        sendJson(res, 200, { paused: false });
        return true;
      case 'POST /debug/stream/split': {
        const deliver = Number(url.searchParams.get('deliver'));
        if (!Number.isInteger(deliver) || deliver < 0) throw new AppError('bad_request', 'deliver must be a non-negative integer');
        deps.split.split(deliver);
        sendJson(res, 200, { deliver });
        return true;
      }
      case 'GET /debug/stream/split-reached': {
        const ok = await withTimeout(deps.split.whenReached(), LONG_POLL_MS);
        sendJson(res, ok ? 200 : 408, { reached: ok });
        return true;
      }
      case 'POST /debug/stream/unsplit':
        sendJson(res, 200, { delivered: deps.split.unsplit(deps.deliver) });
        return true;
      case 'GET /debug/state':
        sendJson(res, 200, deps.state());
        return true;
      case 'GET /debug/wait-revision': {
        const target = Number(url.searchParams.get('atLeast'));
        const deadline = Date.now() + LONG_POLL_MS;
        // Polls on the real clock: this route serves tests, it is not the agent's logic.
        while (deps.appliedRevision() < target && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
        const ok = deps.appliedRevision() >= target;
        sendJson(res, ok ? 200 : 408, { appliedRevision: deps.appliedRevision() });
        return true;
      }
      default:
        throw new AppError('not_found', `No debug route ${req.method} ${url.pathname}.`);
    }
  };
}
