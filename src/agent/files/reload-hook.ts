/**
 * The `onChange: { http }` reload hooks of rendered files (the Prometheus /
 * Envoy `/-/reload` style): once the renderer is idle after publications that
 * changed files, each distinct hook of those files is called once, on
 * loopback only. Calls
 * are coalesced per hook (a publication during a call queues exactly one more
 * call), bounded by a timeout, retried with backoff, and counted per outcome.
 * They run beside the renderer and never hold up a publication. There is no
 * signal hook: it would need a shared PID namespace and a kill capability;
 * `config-sidecar exec` signals from inside the app's container instead.
 */
import { request } from '../../shared/node-http.ts';
import { Counter } from '../../shared/metrics/counter.ts';
import type { MetricsRegistry } from '../../shared/metrics/registry.ts';
import { Backoff } from '../../shared/backoff.ts';
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Milliseconds } from '../../shared/units.ts';

export const DEFAULT_HOOK_TIMEOUT_MS: Milliseconds = 5_000;
export const DEFAULT_HOOK_RETRIES = 2;
const RETRY_BASE_MS: Milliseconds = 200;
const RETRY_CAP_MS: Milliseconds = 5_000;

export type HookMethod = 'POST' | 'PUT' | 'GET';

/** A parsed `onChange:` of a `files:` entry (file-spec.ts checks it is loopback). */
export interface ReloadHook {
  readonly url: string;
  readonly method: HookMethod;
  readonly timeoutMs: Milliseconds;
  readonly retries: number;
}

interface HookState {
  running: boolean;
  pending: boolean;
  hook: ReloadHook;
}

const P = 'config_sidecar_agent_files_reload_hook_';

function counter<L extends string>(registry: MetricsRegistry, name: string, help: string, labelNames: readonly L[]): Counter<L> {
  return (registry.getSingleMetric(P + name) as Counter<L> | undefined) ?? new Counter<L>({ name: P + name, help, labelNames, registers: [registry] });
}

export class ReloadHooks {
  readonly #logger: Logger;
  readonly #clock: Clock;
  readonly #calls: Counter<'hook' | 'outcome'>;
  readonly #retries: Counter<'hook'>;
  readonly #abort = new AbortController();
  readonly #states = new Map<string, HookState>();
  readonly #timers = new Set<TimerHandle>();

  constructor(options: { readonly registry: MetricsRegistry; readonly logger: Logger; readonly clock?: Clock }) {
    this.#logger = options.logger;
    this.#clock = options.clock ?? systemClock;
    this.#calls = counter(options.registry, 'calls_total', 'Reload hook calls after a publication, by outcome (ok, or failed after every retry).', ['hook', 'outcome']);
    this.#retries = counter(options.registry, 'retries_total', 'Reload hook attempts retried after an error, a non-2xx answer or a timeout.', ['hook']);
  }

  /** One publication changed files with these hooks: call each distinct one once. */
  notify(hooks: readonly ReloadHook[]): void {
    const distinct = new Map(hooks.map((hook) => [`${hook.method} ${hook.url}`, hook]));
    for (const [key, hook] of distinct) {
      const state = this.#states.get(key) ?? { running: false, pending: false, hook };
      state.hook = hook;
      this.#states.set(key, state);
      state.pending = true;
      this.#pump(state);
    }
  }

  /** Stops every call and retry (agent shutdown). */
  close(): void {
    this.#abort.abort();
    for (const timer of this.#timers) timer.cancel();
    this.#timers.clear();
  }

  #pump(state: HookState): void {
    if (state.running || !state.pending || this.#abort.signal.aborted) return;
    state.pending = false;
    state.running = true;
    void this.#call(state.hook).finally(() => {
      state.running = false;
      this.#pump(state);
    });
  }

  async #call(hook: ReloadHook): Promise<void> {
    const backoff = new Backoff({ baseMs: RETRY_BASE_MS, capMs: RETRY_CAP_MS });
    for (let attempt = 0; ; attempt += 1) {
      const problem = await this.#attempt(hook);
      if (this.#abort.signal.aborted) return;
      if (problem === undefined) {
        this.#calls.inc({ hook: hook.url, outcome: 'ok' });
        this.#logger.debug({ hook: hook.url }, 'reload hook called');
        return;
      }
      if (attempt >= hook.retries) {
        this.#calls.inc({ hook: hook.url, outcome: 'failed' });
        this.#logger.warn({ hook: hook.url, problem, attempts: attempt + 1 }, 'reload hook failed; the files are published, the app was not told');
        return;
      }
      this.#retries.inc({ hook: hook.url });
      await new Promise<void>((resolve) => {
        const timer = this.#clock.setTimeout(() => {
          this.#timers.delete(timer);
          resolve();
        }, backoff.next());
        this.#timers.add(timer);
        this.#abort.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      if (this.#abort.signal.aborted) return;
    }
  }

  /** One request; undefined when it answered 2xx, else what went wrong (no body is read or logged). */
  #attempt(hook: ReloadHook): Promise<string | undefined> {
    return new Promise((resolve) => {
      const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(hook.timeoutMs)]);
      const req = request(hook.url, { method: hook.method, signal, headers: { 'content-length': 0, 'user-agent': 'config-sidecar-agent' } }, (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        resolve(status >= 200 && status < 300 ? undefined : `HTTP ${status}`);
      });
      req.once('error', (err: NodeJS.ErrnoException) => {
        resolve(err.name === 'AbortError' || err.name === 'TimeoutError' ? `no answer within ${hook.timeoutMs}ms` : (err.code ?? err.message));
      });
      req.end();
    });
  }
}
