/**
 * Child processes for the bench: every system under test and every load
 * generator is a separate process, pinned with `taskset` to its own core so
 * they do not fight for one CPU, and measured from /proc (CPU time, RSS).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/** Clock ticks per second for /proc/PID/stat utime/stime (Linux USER_HZ). */
export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const STOP_GRACE_MS = 5_000;
const LINE_TIMEOUT_MS = 30_000;

// Online CPUs of the machine, not this process's affinity (the runner pins itself to one core).
export const CORES = cpus().length;
export const HAS_TASKSET = spawnSync('taskset', ['--version']).status === 0;

/** Core for the system under test, and for the load generator (different when there are ≥ 2). */
export const SUT_CORE = 0;
export const LOAD_CORE = CORES > 1 ? 1 : 0;

export function pinnedCommand(core: number | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  if (core === undefined || !HAS_TASKSET) return [cmd, [...args]];
  return ['taskset', ['-c', String(core), cmd, ...args]];
}

/** Every child still running, so the suite can stop what it started even after a scenario timed out. */
const live = new Set<Child>();

export async function stopAllChildren(): Promise<void> {
  await Promise.all([...live].map((c) => c.stop('SIGKILL')));
}

export interface Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly name: string;
  output(): string;
  /** Resolves with the first stdout/stderr line matching, or rejects on exit/timeout. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  readonly exited: Promise<number | null>;
}

/** `onOutput` sees every chunk of stdout and stderr, beyond what `output()` keeps (e.g. to write a trace to a file). */
export function startChild(
  name: string,
  cmd: string,
  args: readonly string[],
  options: { core?: number | undefined; env?: NodeJS.ProcessEnv; cwd?: string; onOutput?: ((chunk: string) => void) | undefined } = {},
): Child {
  const [file, argv] = pinnedCommand(options.core, cmd, args);
  // taskset execs the target, so the child's PID is the measured process.
  const proc = spawn(file, argv, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const lines: string[] = [];
  const waiters = new Set<{ match: (l: string) => boolean; resolve: (l: string) => void }>();
  let pending = '';
  const onChunk = (chunk: string): void => {
    options.onOutput?.(chunk);
    if (out.length < 200_000) out += chunk;
    pending += chunk;
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const line of parts) {
      if (lines.length < 5_000) lines.push(line);
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    }
  };
  proc.stdout?.setEncoding('utf8').on('data', onChunk);
  proc.stderr?.setEncoding('utf8').on('data', onChunk);
  const exited = new Promise<number | null>((resolve) => {
    proc.once('exit', (code) => resolve(code));
    proc.once('error', (err) => {
      onChunk(`spawn failed: ${err.message}\n`);
      resolve(null);
    });
  });
  const child: Child = {
    proc,
    pid: proc.pid ?? -1,
    name,
    output: () => out,
    exited,
    waitForLine(match, timeoutMs = LINE_TIMEOUT_MS) {
      const seen = lines.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const waiter = {
          match,
          resolve: (l: string) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`${name}: expected output not seen within ${timeoutMs} ms; output: ${out.slice(-1500)}`));
        }, timeoutMs);
        waiters.add(waiter);
        void exited.then((code) => {
          if (waiters.delete(waiter)) {
            clearTimeout(timer);
            reject(new Error(`${name} exited (${code}) early; output: ${out.slice(-1500)}`));
          }
        });
      });
    },
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
  };
  live.add(child);
  void exited.then(() => live.delete(child));
  return child;
}

/** User + system CPU seconds the process has used so far (from /proc/PID/stat). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Resident set size in bytes (VmRSS from /proc/PID/status). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = /VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1];
  return kib === undefined ? Number.NaN : Number(kib) * 1024;
}

/** The memory figures of /proc/PID/status, in MiB: VmRSS and its anonymous and file-backed parts. */
export interface MemoryStatus {
  readonly vmRss: number;
  readonly rssAnon: number;
  readonly rssFile: number;
}

export function memoryStatus(pid: number): MemoryStatus {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mib = (field: string): number => {
    const kib = new RegExp(`${field}:\\s+(\\d+)\\s+kB`).exec(status)?.[1];
    return kib === undefined ? Number.NaN : Number(kib) / 1024;
  };
  return { vmRss: mib('VmRSS'), rssAnon: mib('RssAnon'), rssFile: mib('RssFile') + mib('RssShmem') };
}

export function which(binary: string, extraDirs: readonly string[] = ['/usr/sbin', '/usr/local/sbin', '/sbin']): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${binary}`], { encoding: 'utf8', env: { PATH: `${process.env.PATH ?? ''}:${extraDirs.join(':')}` } });
  const path = r.stdout.trim();
  return r.status === 0 && path ? path : undefined;
}

export function commandVersion(cmd: string, args: readonly string[]): string {
  const r = spawnSync(cmd, [...args], { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? '';
}
