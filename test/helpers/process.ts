/**
 * Spawning the real `config-sidecar` CLI for tests: JSON log lines parsed as
 * they arrive, waits on a log line (never on a sleep), and a stop that always
 * ends the child. Every child is tracked and SIGKILLed when the test process
 * exits or is signalled, so a failing or cancelled test cannot orphan one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { asIdentity, reachableProject, type PodIdentity } from './pod-harness.ts';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** Default wait for a log line (start-up included). */
export const LOG_WAIT_TIMEOUT_MS = 30_000;
/** How long stop() waits after its signal before SIGKILL. */
export const STOP_KILL_AFTER_MS = 20_000;

export interface LogLine {
  readonly msg?: string;
  readonly level?: string;
  readonly [key: string]: unknown;
}

export interface LoggedProcess {
  readonly proc: ChildProcess;
  readonly logs: LogLine[];
  /** Every raw stdout+stderr chunk (for secret-leak checks). */
  readonly output: () => string;
  readonly stderr: () => string;
  /** Resolves with the first log line (seen so far or later) that matches; rejects on timeout or exit. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends `signal` (default SIGTERM), SIGKILLs after STOP_KILL_AFTER_MS, resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
}

const live = new Set<ChildProcess>();
let hooksInstalled = false;

function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', killAll);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      killAll();
      // Keep the signal's meaning for this process (the runner's cancel ends it) once the children are gone.
      process.off(signal, onSignal);
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

function isRunning(proc: ChildProcess): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

export interface SpawnOptions {
  /** Run as this pod identity (no capabilities, no_new_privs) through the pod harness. */
  readonly as?: PodIdentity;
}

/** Spawns `node src/cli/main.ts ...args` with piped output; `name` labels errors. */
export function spawnCli(name: string, args: readonly string[], env: Record<string, string>, options: SpawnOptions = {}): LoggedProcess {
  installHooks();
  let command = process.execPath;
  let argv = [CLI, ...args];
  if (options.as) {
    const project = reachableProject(options.as);
    // setpriv execs the command, so the child's pid is the agent's own (signals reach it directly).
    ({ command, args: argv } = asIdentity(options.as, project.node, [project.cli, ...args]));
  }
  const proc = spawn(command, argv, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      live.delete(proc);
      resolve(code);
    }),
  );
  const logs: LogLine[] = [];
  let raw = '';
  let stderr = '';
  let pending = '';
  const waiters = new Set<{ predicate: (l: LogLine) => boolean; resolve: (l: LogLine) => void; reject: (e: unknown) => void }>();
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    raw += chunk;
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const text of lines) {
      if (!text.trim()) continue;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        line = { msg: text };
      }
      logs.push(line);
      for (const w of [...waiters]) {
        // A throwing predicate fails its own wait, not the whole test process (uncaught in a stream handler).
        let matched: boolean;
        try {
          matched = w.predicate(line);
        } catch (err) {
          waiters.delete(w);
          w.reject(err);
          continue;
        }
        if (matched) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    }
  });
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    raw += chunk;
    stderr += chunk;
  });
  const waitForLog = (predicate: (line: LogLine) => boolean, timeoutMs = LOG_WAIT_TIMEOUT_MS): Promise<LogLine> => {
    const found = logs.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = {
        predicate,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
        reject: (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`${name} log line not seen within ${timeoutMs}ms; stderr: ${stderr.slice(-2000)}`));
      }, timeoutMs);
      waiters.add(waiter);
      void exited.then((code) => {
        if (waiters.delete(waiter)) {
          clearTimeout(timer);
          reject(new Error(`${name} exited (${code}) before the log line; stderr: ${stderr.slice(-2000)}`));
        }
      });
    });
  };
  return {
    proc,
    logs,
    output: () => raw,
    stderr: () => stderr,
    waitForLog,
    exited,
    async stop(signal = 'SIGTERM') {
      if (!isRunning(proc)) return exited;
      proc.kill(signal);
      if (signal !== 'SIGKILL') {
        const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_KILL_AFTER_MS);
        void exited.then(() => clearTimeout(timer));
      }
      return exited;
    },
  };
}

/** Waits for the start-up log line; a process that never gets there is killed before the error is thrown. */
export async function waitForStart(child: LoggedProcess, predicate: (line: LogLine) => boolean): Promise<LogLine> {
  try {
    return await child.waitForLog(predicate);
  } catch (err) {
    await child.stop('SIGKILL');
    throw err;
  }
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True when the command was still running at the deadline and was killed. */
  readonly timedOut: boolean;
}

/**
 * Runs a CLI command to its end. One that outlives `timeoutMs` is SIGKILLed and
 * reported with `timedOut`, so "it should have exited" fails instead of hanging.
 */
export function runCli(
  args: readonly string[],
  env: Record<string, string> = {},
  options: { readonly stdin?: string; readonly timeoutMs?: number; readonly cwd?: string; readonly uid?: number; readonly gid?: number } = {},
): Promise<CliResult> {
  installHooks();
  return new Promise((resolve, reject) => {
    // As another uid, the checkout may sit under a directory it cannot traverse (mktemp -d is 0700): run the project as that uid can reach it.
    const project = options.uid === undefined ? undefined : reachableProject({ name: 'cli', uid: options.uid, gid: options.gid ?? options.uid, groups: [] });
    const child = spawn(project?.node ?? process.execPath, [project?.cli ?? CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'], cwd: options.cwd, uid: options.uid, gid: options.gid });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? LOG_WAIT_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, stdout, stderr, timedOut });
    });
    child.stdin.end(options.stdin ?? '');
  });
}
