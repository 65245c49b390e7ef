/**
 * The read-path loads on the lean client (lean-http.ts): closed-loop
 * saturation (each connection sends its next request when the last answer
 * ends) and an open-loop fixed rate timed into an HDR histogram. Results
 * have the shapes of load.ts's autocannon and undici runs.
 */
import type * as hdr from 'hdr-histogram-js';
import { LeanConnection, nowMs, requestBytes } from './lean-http.ts';
import { newHistogram, summarise, type FixedRateResult, type Target, type ThroughputResult } from './load.ts';

/** Unrecorded rounds (one request per connection each) before the measured run, as load.ts's fixed-rate client. */
const WARMUP_ROUNDS = 50;
/** Requests due while this many are outstanding are dropped and counted (the system fell behind). */
const MAX_IN_FLIGHT = 512;
/** Open-loop scheduler tick. */
const TICK_MS = 1;

function requestsFor(target: Target, paths: readonly string[], headersFor?: (path: string) => Record<string, string> | undefined): Buffer[] {
  return paths.map((path) => requestBytes(target, path, headersFor?.(path)));
}

async function openAll(target: Target, count: number, done: (c: LeanConnection, status: number, startedMs: number) => void): Promise<LeanConnection[]> {
  const conns: LeanConnection[] = [];
  for (let i = 0; i < count; i++) {
    const c: LeanConnection = new LeanConnection(target, (status, started) => done(c, status, started));
    conns.push(c);
  }
  await Promise.all(conns.map((c) => c.ready()));
  return conns;
}

function countStatus(codes: Record<string, number>, status: number): void {
  const key = String(status);
  codes[key] = (codes[key] ?? 0) + 1;
}

/**
 * Requests per second at saturation with `connections` keep-alive
 * connections, pipelining 1, cycling through `paths`; for `durationS`
 * seconds or `amount` requests.
 */
export async function runClosedLoop(
  target: Target,
  options: { connections: number; durationS?: number; amount?: number; paths: readonly string[]; headersFor?: (path: string) => Record<string, string> },
): Promise<ThroughputResult> {
  const requests = requestsFor(target, options.paths, options.headersFor);
  const statusCodes: Record<string, number> = {};
  let next = 0;
  let started = 0;
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  let deadline = Number.POSITIVE_INFINITY;
  const limit = options.amount ?? Number.POSITIVE_INFINITY;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const issue = (c: LeanConnection): void => {
    if (started >= limit || nowMs() >= deadline) {
      if (completed + errors >= started) finish();
      return;
    }
    started++;
    c.send(requests[next++ % requests.length] as Buffer, 0);
  };
  const conns = await openAll(target, options.connections, (c, status) => {
    if (status === 0) errors++;
    else {
      completed++;
      countStatus(statusCodes, status);
      if (status < 200 || status > 299) non2xx++;
    }
    issue(c);
  });
  const t0 = nowMs();
  if (options.amount === undefined) deadline = t0 + (options.durationS ?? 3) * 1000;
  for (const c of conns) issue(c);
  await finished;
  const seconds = (nowMs() - t0) / 1000;
  for (const c of conns) c.close();
  return { requests: completed, seconds, rps: completed / seconds, errors, non2xx, statusCodes };
}

export interface OpenLoopTarget {
  readonly target: Target;
  readonly nextPath: (i: number) => string;
  readonly headersFor?: (path: string) => Record<string, string> | undefined;
  /** Record into this histogram (one run's slices merged); the result's latency then covers every slice so far. */
  readonly histogram?: hdr.Histogram;
  /** Each recorded request's start (performance.now() ms) and time, e.g. to line slow ones up with a server's log. */
  readonly onTimed?: (startedMs: number, elapsedMs: number) => void;
}

/** One target's connections, queue and counts in an open-loop run. */
class OpenLoop {
  readonly #o: OpenLoopTarget;
  readonly #histogram: hdr.Histogram;
  readonly #statusCodes: Record<string, number> = {};
  readonly #bytes = new Map<string, Buffer>();
  // Requests started but not yet on a connection, FIFO: their bytes and start times.
  readonly #queued: Array<{ request: Buffer; startedMs: number }> = [];
  #conns: LeanConnection[] = [];
  #recording = false;
  #inFlight = 0;
  #idle: () => void = () => {};
  sent = 0;
  completed = 0;
  errors = 0;
  dropped = 0;

  constructor(o: OpenLoopTarget) {
    this.#o = o;
    this.#histogram = o.histogram ?? newHistogram();
  }

  async open(connections: number): Promise<void> {
    this.#conns = await openAll(this.#o.target, connections, (c, status, startedMs) => this.#onDone(c, status, startedMs));
  }

  /** Starts request `i` now (sent on a free connection, else queued), or drops it when too many are outstanding. */
  start(i: number): void {
    this.sent++;
    if (this.#inFlight >= MAX_IN_FLIGHT) {
      this.dropped++;
      return;
    }
    const path = this.#o.nextPath(i);
    let request = this.#bytes.get(path);
    if (request === undefined) this.#bytes.set(path, (request = requestBytes(this.#o.target, path, this.#o.headersFor?.(path))));
    this.#inFlight++;
    const free = this.#conns.find((c) => !c.busy);
    if (free) free.send(request, nowMs());
    else this.#queued.push({ request, startedMs: nowMs() });
  }

  record(): void {
    this.sent = 0;
    this.#recording = true;
  }

  drained(): Promise<void> {
    return this.#inFlight === 0 ? Promise.resolve() : new Promise((resolve) => (this.#idle = resolve));
  }

  result(seconds: number): FixedRateResult {
    for (const c of this.#conns) c.close();
    const { sent, dropped, completed, errors } = this;
    return { sent, dropped, completed, errors, statusCodes: this.#statusCodes, latency: summarise(this.#histogram), rate: (sent - dropped) / seconds };
  }

  #onDone(c: LeanConnection, status: number, startedMs: number): void {
    this.#inFlight--;
    if (this.#recording) {
      if (status === 0) this.errors++;
      else {
        const elapsedMs = nowMs() - startedMs;
        this.#histogram.recordValue(Math.max(1, Math.round(elapsedMs * 1e6)));
        this.#o.onTimed?.(startedMs, elapsedMs);
        this.completed++;
        countStatus(this.#statusCodes, status);
      }
    }
    const q = this.#queued.shift();
    if (q !== undefined) c.send(q.request, q.startedMs);
    if (this.#inFlight === 0) this.#idle();
  }
}

/**
 * Open-loop load at `rate` req/s for `durationS` on each target at once, on
 * one 1 ms schedule: each tick starts every target's due requests, the
 * targets' order alternating from tick to tick. A request is started
 * whatever the previous ones did; one that finds every connection busy
 * waits in a queue, and its time (from its start to its last body byte)
 * includes that wait, as undici's pool queue did in load.ts. Run together,
 * the systems meet the same moments of a shared machine (a stall of either
 * core lands on every system's requests alike) instead of whichever took
 * its turn during it.
 */
export async function runOpenLoops(
  targets: readonly OpenLoopTarget[],
  options: { rate: number; durationS: number; connections: number },
): Promise<FixedRateResult[]> {
  const loops = targets.map((t) => new OpenLoop(t));
  await Promise.all(loops.map((l) => l.open(options.connections)));
  const total = Math.round(options.rate * options.durationS);
  // Warm-up, not recorded: let both sides' JIT settle on these connections.
  for (let w = 0; w < WARMUP_ROUNDS; w++) {
    for (const l of loops) for (let c = 0; c < options.connections; c++) l.start(w * 64 + c);
    await Promise.all(loops.map((l) => l.drained()));
  }
  for (const l of loops) l.record();
  const t0 = nowMs();
  let ticks = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const due = Math.min(total, Math.floor(((nowMs() - t0) / 1000) * options.rate));
      const first = ticks++ % loops.length;
      for (let k = 0; k < loops.length; k++) {
        const l = loops[(first + k) % loops.length] as OpenLoop;
        while (l.sent < due) l.start(l.sent);
      }
      if (due >= total) resolve();
      else setTimeout(tick, TICK_MS);
    };
    tick();
  });
  await Promise.all(loops.map((l) => l.drained()));
  const seconds = (nowMs() - t0) / 1000;
  return loops.map((l) => l.result(seconds));
}

/** runOpenLoops for one target. */
export async function runOpenLoop(
  target: Target,
  options: { rate: number; durationS: number; connections: number } & Omit<OpenLoopTarget, 'target'>,
): Promise<FixedRateResult> {
  const [result] = await runOpenLoops([{ ...options, target }], options);
  return result as FixedRateResult;
}
