/**
 * One config pipeline for every command (STYLE.md §3): read flags / env / file
 * → reject unknown keys → check each field, naming it → check fields together
 * → freeze. Commander supplies flag and env-twin values (`Option.env`); the
 * schemas in setting-schemas.ts turn text into typed values and every failure
 * into the `SettingError` here, which names the flag, its environment
 * variable and the fix. This module holds what needs no schema (the error,
 * labels, env names, secrets), so a process that only runs already-validated
 * settings (the re-executed agent, cli/agent-handoff.ts) never loads zod.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export const ENV_PREFIX = 'CONFIG_SIDECAR_';

/** `--data-dir` → `CONFIG_SIDECAR_DATA_DIR`. */
export function envNameFor(flag: string): string {
  return ENV_PREFIX + flag.replace(/^--/, '').replace(/-/g, '_').toUpperCase();
}

/** A start-up failure that names the setting; the CLI prints it and exits 2. */
export class SettingError extends Error {
  override readonly name = 'SettingError';
  readonly setting: string;
  /** The message without the setting, to re-label it. */
  readonly detail: string;
  constructor(setting: string, message: string) {
    super(`Invalid setting ${setting}: ${message}`);
    this.setting = setting;
    this.detail = message;
  }
}

/** A `host:port` listen address; port 0 asks the OS for a free port. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/**
 * The label table for `parseSettings` from a settings-key → flag table:
 * `dataDir: '--data-dir'` becomes `--data-dir (CONFIG_SIDECAR_DATA_DIR)`. A
 * flag text that already says where the value comes from (it holds a `(`) is
 * kept as written, for secrets read from a file or an env var.
 */
export function flagLabels(flags: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  return Object.freeze(Object.fromEntries(Object.entries(flags).map(([key, flag]) => [key, flag.includes('(') ? flag : `${flag} (${envNameFor(flag)})`])));
}

/** Drops keys whose value is undefined, so an absent flag neither overrides another source nor hides a default. */
export function definedSettings(raw: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
}

/** Describes a setting for messages: `--data-dir (CONFIG_SIDECAR_DATA_DIR)`. */
export function settingLabel(key: string, labels: Readonly<Record<string, string>>): string {
  return labels[key] ?? key;
}

/**
 * Reads a secret from a file or an environment variable, never from a
 * command-line value (which `ps` would show). Trailing newlines are trimmed.
 */
export function readSecretSetting(options: {
  readonly fileFlag: string;
  readonly file?: string | undefined;
  readonly envVar: string;
  readonly env?: NodeJS.ProcessEnv;
}): string | undefined {
  const env = options.env ?? process.env;
  if (options.file) {
    try {
      return readFileSync(options.file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new SettingError(options.fileFlag, `cannot read "${options.file}" (${code}); point it at a readable file`);
    }
  }
  const value = env[options.envVar];
  return value === undefined || value === '' ? undefined : value;
}
