/**
 * `exec`'s settings through the one pipeline (shared/settings.ts): flags and
 * their CONFIG_SIDECAR_* twins → each field checked, naming it → the
 * references checked together → frozen.
 */
import { constants } from 'node:os';
import { z } from 'zod';
import { flagLabels, SettingError, definedSettings } from '../../shared/settings.ts';
import { durationSchema, parseSettings } from '../../shared/setting-schemas.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { checkDistinct, parseEnvFile, parsePrefixRef, parseVarRef, type EnvRef } from './env-refs.ts';

export const DEFAULT_DEBOUNCE_MS: Milliseconds = 1_000;
export const DEFAULT_GRACE_MS: Milliseconds = 10_000;
export const DEFAULT_WAIT_MS: Milliseconds = 30_000;

export type OnChange = { readonly kind: 'restart' } | { readonly kind: 'none' } | { readonly kind: 'signal'; readonly signal: NodeJS.Signals };

export interface ExecSettings {
  readonly socket: string | undefined;
  readonly refs: readonly EnvRef[];
  readonly onChange: OnChange;
  readonly debounceMs: Milliseconds;
  readonly graceMs: Milliseconds;
  readonly waitMs: Milliseconds;
  readonly command: string;
  readonly args: readonly string[];
}

const LABELS = flagLabels({
  socket: '--socket',
  onChange: '--on-change',
  debounce: '--debounce',
  grace: '--grace',
  wait: '--wait',
  envFile: '--env-file',
});

const onChangeSchema = z.string().transform((value, ctx): OnChange => {
  const text = value.trim();
  if (text === 'restart' || text === 'none') return { kind: text };
  const match = /^signal:(?:SIG)?([A-Z0-9]+)$/i.exec(text);
  const signal = match ? `SIG${(match[1] as string).toUpperCase()}` : '';
  if (signal && signal !== 'SIGKILL' && signal !== 'SIGSTOP' && Object.hasOwn(constants.signals, signal)) return { kind: 'signal', signal: signal as NodeJS.Signals };
  ctx.addIssue({ code: 'custom', message: `"${value}" is not restart, none or signal:<SIGNAME> (e.g. signal:SIGHUP; SIGKILL and SIGSTOP cannot be trapped)` });
  return z.NEVER;
});

const schema = z
  .object({
    socket: z.string().min(1).optional(),
    onChange: onChangeSchema.default({ kind: 'restart' }),
    debounce: durationSchema.default(DEFAULT_DEBOUNCE_MS),
    grace: durationSchema.default(DEFAULT_GRACE_MS),
    wait: durationSchema.default(DEFAULT_WAIT_MS),
    envFile: z.string().min(1).optional(),
  })
  .strict();

export interface ExecFlags {
  readonly socket?: string;
  readonly env?: readonly string[];
  readonly envPrefix?: readonly string[];
  readonly envFile?: string;
  readonly onChange?: string;
  readonly debounce?: string;
  readonly grace?: string;
  readonly wait?: string;
}

export function loadExecSettings(flags: ExecFlags, argv: readonly string[]): ExecSettings {
  const { env = [], envPrefix = [], ...rest } = flags;
  const parsed = parseSettings(schema, definedSettings(rest), LABELS);
  const refs = [
    ...env.map((text) => parseVarRef(text, '--env')),
    ...envPrefix.map((text) => parsePrefixRef(text, '--env-prefix')),
    ...(parsed.envFile ? parseEnvFile(parsed.envFile, LABELS.envFile as string) : []),
  ];
  if (refs.length === 0) throw new SettingError('--env', 'exec needs at least one --env NAME=namespace/name, --env-prefix or --env-file entry');
  checkDistinct(refs);
  const [command, ...args] = argv;
  if (!command) throw new SettingError('command', 'give the command to run after --, e.g. config-sidecar exec --env ... -- node server.js');
  return Object.freeze({
    socket: parsed.socket,
    refs: Object.freeze(refs),
    onChange: parsed.onChange,
    debounceMs: parsed.debounce,
    graceMs: parsed.grace,
    waitMs: parsed.wait,
    command,
    args: Object.freeze(args),
  });
}
