/**
 * The command `exec` runs: spawned with the terminal (stdio inherited) and
 * the built environment, signalled, and stopped with a grace period
 * (SIGTERM, then SIGKILL), the way the kubelet stops a container.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { constants } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Milliseconds } from '../../shared/units.ts';

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A shell's convention: the exit code, or 128 + the signal's number. */
export function exitCodeOf(status: ExitStatus): number {
  if (status.code !== null) return status.code;
  const number = status.signal ? constants.signals[status.signal] : undefined;
  return 128 + (number ?? 0);
}

/**
 * Whether `command` exists as given or in a PATH directory. execvp reports
 * EACCES when some PATH directory is unreadable to this user even though the
 * command is in none of them; a shell says "not found" (127) then.
 */
function onPath(command: string, path: string | undefined): boolean {
  const candidates = command.includes('/') ? [command] : (path ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, command));
  return candidates.some((candidate) => {
    try {
      return statSync(candidate).isFile();
    } catch {
      return false;
    }
  });
}

export class SpawnError extends Error {
  override readonly name = 'SpawnError';
  /** 127 not found, 126 not executable: what a shell answers. */
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}

export class SupervisedChild {
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  readonly #proc: ChildProcess;
  #done = false;

  private constructor(proc: ChildProcess, exited: Promise<ExitStatus>) {
    this.#proc = proc;
    this.pid = proc.pid as number;
    this.exited = exited.then((status) => {
      this.#done = true;
      return status;
    });
  }

  /** Spawns `command`; rejects with a SpawnError when it cannot be started. */
  static start(command: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<SupervisedChild> {
    return new Promise((resolve, reject) => {
      const proc = spawn(command, args, { env, stdio: 'inherit' });
      const exited = new Promise<ExitStatus>((done) => proc.once('exit', (code, signal) => done({ code, signal })));
      proc.once('error', (err: NodeJS.ErrnoException) => {
        const notFound = err.code === 'ENOENT' || (err.code === 'EACCES' && !onPath(command, env.PATH));
        reject(new SpawnError(`cannot start "${command}": ${notFound ? 'not found on PATH' : (err.code ?? err.message)}`, notFound ? 127 : 126));
      });
      proc.once('spawn', () => resolve(new SupervisedChild(proc, exited)));
    });
  }

  get running(): boolean {
    return !this.#done;
  }

  /** Sends `signal` if the child still runs; false when it could not. */
  signal(signal: NodeJS.Signals): boolean {
    if (this.#done) return false;
    try {
      return this.#proc.kill(signal);
    } catch {
      return false;
    }
  }

  /** SIGTERM (or `signal`), SIGKILL after `graceMs`; resolves when the child is gone. */
  async stop(graceMs: Milliseconds, signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitStatus> {
    if (this.#done) return this.exited;
    this.signal(signal);
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Last resort when `exec` itself is leaving: the child must not outlive it. */
  kill(): void {
    this.signal('SIGKILL');
  }
}
