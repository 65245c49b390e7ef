/**
 * `config-sidecar exec`: read the referenced items through the agent, start
 * the command with them in its environment, and on a change either restart
 * it with the new values or signal it. The child's own exit ends `exec` with
 * its status (Kubernetes decides about restarts); a SIGINT or SIGTERM is
 * forwarded and the child is stopped within the grace period, so none is
 * left behind. Prints lifecycle lines on stderr, never a value, and writes
 * nothing to disk.
 */
import { constants } from 'node:os';
import { basename } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ConfigSidecarError, type ConfigSidecarClient, type Item, type WatchEvent } from '../../client/index.ts';
import type { Clock } from '../../shared/clock.ts';
import { formatDuration, type Milliseconds } from '../../shared/units.ts';
import { CliError, EXIT } from '../cli-util.ts';
import { ChangeCoalescer } from './change-coalescer.ts';
import { buildEnv, EnvBuildError, itemsOf, type ReadItem } from './env-refs.ts';
import type { ExecSettings } from './exec-settings.ts';
import { exitCodeOf, SpawnError, SupervisedChild } from './supervised-child.ts';

/** Signals `exec` catches and passes on; SIGINT and SIGTERM also end it once the child is gone. */
export const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const;
const TERMINATING: ReadonlySet<NodeJS.Signals> = new Set(['SIGINT', 'SIGTERM']);
/** Between readiness probes while waiting for the agent. */
const WAIT_POLL_MS: Milliseconds = 200;
/** A change whose values could not be read (the agent restarting) is retried this often at least. */
const RETRY_READ_MS: Milliseconds = 1_000;

export interface ExecDeps {
  readonly client: ConfigSidecarClient;
  readonly clock: Clock;
  /** One lifecycle line (the caller adds the prefix and newline). */
  readonly log: (line: string) => void;
  /** The socket, for messages. */
  readonly socketLabel: string;
  /** Extra environment for the child on top of the inherited one (tests); default process.env. */
  readonly baseEnv?: NodeJS.ProcessEnv;
}

interface Snapshot {
  readonly env: Readonly<Record<string, string>>;
  readonly revisions: ReadonlyMap<string, number>;
}

/** Worth retrying: the agent is starting, restarting, or cannot reach its server yet. */
const retryable = (err: unknown): boolean => err instanceof ConfigSidecarError && (err.status === 0 || err.status === 429 || err.status >= 500);

async function readItems(client: ConfigSidecarClient, items: readonly string[]): Promise<Map<string, Item>> {
  const read = await Promise.all(
    items.map(async (item) => {
      try {
        return [item, await client.get(item)] as const;
      } catch (err) {
        if (err instanceof ConfigSidecarError) throw new ConfigSidecarError(err.code, err.status, `${item}: ${err.message}`, { cause: err });
        throw err;
      }
    }),
  );
  return new Map(read);
}

function snapshotOf(settings: ExecSettings, read: Map<string, Item>): Snapshot {
  const env = buildEnv(settings.refs, read as ReadonlyMap<string, ReadItem>);
  return { env, revisions: new Map([...read].map(([item, got]) => [item, got.revision])) };
}

function changedNames(before: Readonly<Record<string, string>>, after: Readonly<Record<string, string>>): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].filter((name) => before[name] !== after[name]).sort();
}

/** Reads every item, retrying while the agent is not ready, up to `--wait`. */
async function waitForSnapshot(settings: ExecSettings, deps: ExecDeps): Promise<Snapshot> {
  const items = itemsOf(settings.refs);
  const deadline = deps.clock.now() + settings.waitMs;
  let waiting = false;
  for (;;) {
    try {
      return snapshotOf(settings, await readItems(deps.client, items));
    } catch (err) {
      if (err instanceof EnvBuildError) throw new CliError(err.message, EXIT.failed);
      if (!retryable(err)) {
        const e = err as ConfigSidecarError;
        throw new CliError(`${e.message} (${e.code ?? 'error'})`, e.status === 400 ? EXIT.usage : EXIT.failed);
      }
      const reason = (err as Error).message;
      if (deps.clock.now() >= deadline) {
        throw new CliError(
          `the agent at ${deps.socketLabel} was not ready within ${formatDuration(settings.waitMs)} (${reason}). ` +
            'Is the agent running, and is --socket (CONFIG_SIDECAR_SOCKET) right? Raise --wait (CONFIG_SIDECAR_WAIT) for a slower start.',
          EXIT.unreachable,
        );
      }
      if (!waiting) deps.log(`waiting up to ${formatDuration(settings.waitMs)} for the agent at ${deps.socketLabel} (${reason})`);
      waiting = true;
      await delay(WAIT_POLL_MS);
    }
  }
}

/** Runs the command until it ends; resolves with `exec`'s exit code. */
export async function runExec(settings: ExecSettings, deps: ExecDeps): Promise<number> {
  const { log } = deps;
  const name = basename(settings.command);
  let snapshot = await waitForSnapshot(settings, deps);
  const childEnv = (env: Readonly<Record<string, string>>): NodeJS.ProcessEnv => ({ ...(deps.baseEnv ?? process.env), ...env });

  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  let stopping = false;
  let current: SupervisedChild | undefined;
  /** The child a restart is stopping: its exit is expected, not the end. */
  let replacing: SupervisedChild | undefined;

  const adopt = (child: SupervisedChild): void => {
    current = child;
    log(`started ${name} (pid ${child.pid})`);
    void child.exited.then((status) => {
      if (child === replacing) return;
      log(`${name} (pid ${child.pid}) exited with ${status.signal ?? `code ${status.code}`}`);
      finish(exitCodeOf(status));
    });
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (TERMINATING.has(signal)) {
      if (!stopping) log(`${signal}: stopping ${name}`);
      stopping = true;
      coalescer.close();
      if (current && current !== replacing) void current.stop(settings.graceMs, signal);
      else if (!current) finish(128 + (constants.signals[signal] ?? 0));
      return;
    }
    current?.signal(signal);
  };
  for (const signal of FORWARDED_SIGNALS) process.on(signal, onSignal);
  const killOnExit = (): void => current?.kill();
  process.on('exit', killOnExit);

  let retryTimer: { cancel(): void } | undefined;
  const act = async (): Promise<boolean> => {
    if (stopping || !current) return false;
    let next: Snapshot;
    try {
      next = snapshotOf(settings, await readItems(deps.client, itemsOf(settings.refs)));
    } catch (err) {
      if (retryable(err)) {
        log(`a referenced item changed but cannot be read now (${(err as Error).message}); retrying`);
        retryTimer?.cancel();
        retryTimer = deps.clock.setTimeout(() => coalescer.notify(), Math.max(settings.debounceMs, RETRY_READ_MS));
      } else {
        log(`a referenced item changed but ${(err as Error).message}; ${name} keeps the values it has`);
      }
      return false;
    }
    if (stopping) return false;
    const changed = changedNames(snapshot.env, next.env);
    snapshot = next;
    if (changed.length === 0) return false;
    const what = `changed: ${changed.join(', ')}`;
    if (settings.onChange.kind === 'none') {
      log(`${what}; --on-change none, ${name} keeps running`);
      return true;
    }
    if (settings.onChange.kind === 'signal') {
      log(`${what}; sending ${settings.onChange.signal} to ${name} (pid ${current.pid})`);
      current.signal(settings.onChange.signal);
      return true;
    }
    log(`${what}; restarting ${name} (pid ${current.pid})`);
    const old = current;
    replacing = old;
    const status = await old.stop(settings.graceMs);
    if (stopping) {
      finish(exitCodeOf(status));
      return true;
    }
    try {
      const child = await SupervisedChild.start(settings.command, settings.args, childEnv(snapshot.env));
      adopt(child);
      // A SIGTERM that arrived while the new child was being spawned.
      if (stopping) void child.stop(settings.graceMs);
    } catch (err) {
      log((err as Error).message);
      finish(err instanceof SpawnError ? err.exitCode : EXIT.failed);
    }
    return true;
  };
  const coalescer = new ChangeCoalescer(settings.debounceMs, deps.clock, act);

  // Events that carry a revision this exec already read are not changes; a change set's
  // events share one id and are one change.
  let lastTrigger = '';
  const onEvent = (event: WatchEvent): void => {
    const relevant =
      event.type === 'resync' ||
      ((event.type === 'changed' || event.type === 'deleted') &&
        event.revision > (snapshot.revisions.get(`${event.namespace}/${event.name ?? ''}`) ?? Number.POSITIVE_INFINITY));
    if (!relevant || (event.id !== '' && event.id === lastTrigger)) return;
    lastTrigger = event.id;
    coalescer.notify();
  };

  const abort = new AbortController();
  const watches = [...new Set(itemsOf(settings.refs).map((item) => item.slice(0, item.lastIndexOf('/'))))].map(async (namespace) => {
    const since = Math.min(...[...snapshot.revisions].filter(([item]) => item.startsWith(`${namespace}/`)).map(([, revision]) => revision));
    let reported = '';
    try {
      const events = deps.client.watch(namespace, {
        signal: abort.signal,
        lastEventId: String(since),
        onReconnect: (reason) => {
          if (reason !== reported) log(`watch ${namespace}: ${reason}; reconnecting`);
          reported = reason;
        },
      });
      for await (const event of events) {
        reported = '';
        onEvent(event);
      }
    } catch (err) {
      if (!abort.signal.aborted) log(`watch ${namespace} failed: ${(err as Error).message}; changes there will not reach ${name}`);
    }
  });

  try {
    // A SIGTERM between reading the values and here has already settled the exit code.
    if (!stopping) adopt(await SupervisedChild.start(settings.command, settings.args, childEnv(snapshot.env)));
  } catch (err) {
    if (!(err instanceof SpawnError)) throw err;
    finish(err.exitCode);
    log(err.message);
  }

  const code = await finished;
  stopping = true;
  coalescer.close();
  retryTimer?.cancel();
  abort.abort();
  for (const signal of FORWARDED_SIGNALS) process.off(signal, onSignal);
  current?.kill();
  process.off('exit', killOnExit);
  await Promise.allSettled(watches);
  return code;
}
