/**
 * JSON-lines logging with pino. Values and tokens are never logged: callers
 * pass identities (namespace, name, version, subject), never payloads, and the
 * redact list is a second line of defence for fields that must never appear.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './log-levels.ts';

export type { Logger };

export const REDACTED_FIELDS = [
  'value',
  'valueBase64',
  'token',
  'authorization',
  'headers.authorization',
  'headers["x-config-sidecar-token"]',
  'req.headers.authorization',
  'req.headers["x-config-sidecar-token"]',
  'dek',
  'kek',
  'privateKey',
  'password',
  '*.value',
  '*.token',
];

export { LOG_LEVELS, type LogLevel } from './log-levels.ts';

export interface LoggerOptions {
  readonly component: string;
  readonly level?: LogLevel;
  /** Where lines go; tests pass an in-memory sink. Default: stdout. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { component: options.component, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_FIELDS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
