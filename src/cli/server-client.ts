/**
 * How operator commands reach the control plane: which server (flag, then
 * CONFIG_SIDECAR_SERVER, then the one `login` stored, then the local default),
 * which token (--token-file, then CONFIG_SIDECAR_TOKEN, then the `login`
 * token file), one REST call with errors mapped to exit codes, and the
 * `-o text|json|yaml` output every read command shares.
 */
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Option } from 'commander';
import { readSecretSetting } from '../shared/settings.ts';
import { CliError, EXIT } from './cli-util.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8420';
const SERVER_ENV = 'CONFIG_SIDECAR_SERVER';
const TOKEN_ENV = 'CONFIG_SIDECAR_TOKEN';
const LOGIN_DIR_MODE = 0o700;
const LOGIN_FILE_MODE = 0o600;

export interface ServerFlags {
  /** A URL, or `true` for `get --server` without one. */
  server?: string | boolean;
  tokenFile?: string;
  /** A token already in hand (`login` checking the one it was given). */
  token?: string;
}

/** Where `login` keeps the token and server: $CONFIG_SIDECAR_LOGIN_DIR, else $XDG_CONFIG_HOME/config-sidecar, else ~/.config/config-sidecar. */
export function loginDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CONFIG_SIDECAR_LOGIN_DIR) return env.CONFIG_SIDECAR_LOGIN_DIR;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'config-sidecar');
}

function readLoginFile(name: 'token' | 'server'): string | undefined {
  try {
    const text = readFileSync(join(loginDir(), name), 'utf8').trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

/** Stores what `login` verified: the token (mode 0600, directory 0700) and the server it is for. */
export function storeLogin(server: string, token: string): string {
  const dir = loginDir();
  mkdirSync(dir, { recursive: true, mode: LOGIN_DIR_MODE });
  chmodSync(dir, LOGIN_DIR_MODE);
  const tokenFile = join(dir, 'token');
  // Created with the mode, and chmod'ed in case it already existed with a wider one.
  writeFileSync(tokenFile, `${token}\n`, { mode: LOGIN_FILE_MODE });
  chmodSync(tokenFile, LOGIN_FILE_MODE);
  writeFileSync(join(dir, 'server'), `${server}\n`, { mode: LOGIN_FILE_MODE });
  return tokenFile;
}

export function resolveServer(flag: string | boolean | undefined): string {
  if (typeof flag === 'string' && flag !== '') return flag;
  return process.env[SERVER_ENV] || readLoginFile('server') || DEFAULT_SERVER;
}

export function resolveToken(flags: ServerFlags): string {
  const token = readSecretSetting({ fileFlag: '--token-file', file: flags.tokenFile, envVar: TOKEN_ENV }) ?? readLoginFile('token');
  if (!token) throw new CliError(`a token is required: run \`config-sidecar login\`, set ${TOKEN_ENV}, or pass --token-file FILE`, EXIT.usage);
  return token;
}

/** One REST call; server errors become CliErrors with the server's code, transport errors exit 3. */
export async function call(flags: ServerFlags, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const token = flags.token ?? resolveToken(flags);
  const server = resolveServer(flags.server);
  const { request } = await import('undici');
  let url: URL;
  try {
    url = new URL(path, server);
  } catch {
    throw new CliError(`--server "${server}" is not a URL; write e.g. ${DEFAULT_SERVER}`, EXIT.usage);
  }
  let response;
  try {
    response = await request(url, {
      method: method as 'GET',
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  } catch (err) {
    throw new CliError(`cannot reach the server at ${server}: ${(err as Error).message}. Is it running? (--server / ${SERVER_ENV})`, EXIT.unreachable);
  }
  const text = await response.body.text();
  let parsed: Record<string, unknown> & { error?: { code?: string; message?: string } };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    throw new CliError(`the server answered HTTP ${response.statusCode} with a non-JSON body; is ${server} a config-sidecar server?`, EXIT.failed);
  }
  if (response.statusCode >= 300) {
    const code = parsed.error?.code ?? 'error';
    throw new CliError(`${parsed.error?.message ?? `HTTP ${response.statusCode}`} (${code})`, response.statusCode === 400 ? EXIT.usage : EXIT.failed);
  }
  return parsed;
}

export type OutputFormat = 'text' | 'json' | 'yaml';

/** `-o text|json|yaml` for read commands (`--json` stays as the short form of `-o json`). */
export function outputOption(): Option {
  return new Option('-o, --output <format>', 'text, json or yaml').choices(['text', 'json', 'yaml']).default('text');
}

export function outputFormat(flags: { output?: string; json?: boolean }): OutputFormat {
  return flags.json ? 'json' : ((flags.output ?? 'text') as OutputFormat);
}

/** Prints `value` as JSON or YAML, or `text` for the text format. */
export async function printAs(format: OutputFormat, value: unknown, text: () => string): Promise<void> {
  if (format === 'json') {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  } else if (format === 'yaml') {
    const { stringify } = await import('yaml');
    process.stdout.write(stringify(value));
  } else {
    const out = text();
    process.stdout.write(out.endsWith('\n') ? out : `${out}\n`);
  }
}
