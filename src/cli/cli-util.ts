/**
 * How CLI commands end: a clear message on stderr and a stable exit code.
 * 0 ok · 1 the operation failed (server said no, not found) · 2 bad usage or
 * setting · 3 cannot reach the server or agent.
 */
import { AppError, describeError } from '../shared/errors.ts';
import { SettingError } from '../shared/settings.ts';

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

export class CliError extends Error {
  override readonly name = 'CliError';
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.failed) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** Wraps a command action so every failure prints one actionable line and sets the exit code. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      const { message, code } = explain(err);
      process.stderr.write(`config-sidecar: ${message}\n`);
      process.exitCode = code;
    }
  };
}

function explain(err: unknown): { message: string; code: number } {
  if (err instanceof CliError) return { message: err.message, code: err.exitCode };
  if (err instanceof SettingError) return { message: err.message, code: EXIT.usage };
  if (err instanceof AppError) return { message: `${err.message} (${err.code})`, code: EXIT.failed };
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNREFUSED' || code === 'ENOENT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return { message: `cannot connect: ${describeError(err)}. Is the server/agent running, and is the address right?`, code: EXIT.unreachable };
  }
  return { message: describeError(err), code: EXIT.failed };
}
