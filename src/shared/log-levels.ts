/**
 * The log levels, apart from logger.ts (pino), so the settings schemas can
 * name them without loading the logger: the `--config` reload's validator
 * child loads only what validation needs (agent/config-validator.ts).
 */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
