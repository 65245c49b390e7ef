/**
 * The `--database-url` setting: its checks, the redaction of its password in
 * messages, and the start-up errors that name it. Free of `pg` so settings
 * can be checked without loading the driver.
 */
import { SettingError } from '../../shared/settings.ts';

export const DATABASE_URL_SETTING = '--database-url (CONFIG_SIDECAR_DATABASE_URL)';
const URL_EXAMPLE = 'postgres://USER:PASSWORD@HOST:5432/DATABASE?sslmode=require';
const SCHEMES = new Set(['postgres:', 'postgresql:']);

/** SQLSTATE classes that mean the database is unreachable or going away: 08 connection, 53 resources, 57 operator intervention. */
const UNAVAILABLE_SQLSTATE_RE = /^(08|53|57)/;
const UNAVAILABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'ENOENT', 'EHOSTUNREACH', 'ENETUNREACH']);
/** pg reports these without a code: a pool connect timeout, a connection that died mid-query. */
const UNAVAILABLE_MESSAGE_RE = /timeout exceeded when trying to connect|Connection terminated|connection timeout|Client has encountered a connection error|not queryable/i;
/** Refusals a URL fix resolves: 28 = authentication, 3D000 = no such database. */
const REFUSED_SQLSTATE_RE = /^(28|3D000)/;

/** Whether `err` means "PostgreSQL cannot be reached right now" (answered 503, retried later). */
export function isPgUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATE_RE.test(code) || UNAVAILABLE_NODE_CODES.has(code))) return true;
  return err instanceof Error && UNAVAILABLE_MESSAGE_RE.test(err.message);
}

/** `text` with the URL's password (raw and decoded) replaced by `***`. */
export function redactUrl(text: string, url: string): string {
  let password = '';
  try {
    password = new URL(url).password;
  } catch {
    return text;
  }
  if (!password) return text;
  let out = text.split(password).join('***');
  try {
    out = out.split(decodeURIComponent(password)).join('***');
  } catch {
    // A malformed escape cannot appear decoded in the text either.
  }
  return out;
}

/** Where the URL points, without credentials: `host:port/database`. */
export function describeTarget(url: string): string {
  const u = new URL(url);
  const host = u.searchParams.get('host') ?? (u.hostname || 'localhost');
  const port = u.searchParams.get('port') ?? (u.port || '5432');
  return `${host}:${port}/${decodeURIComponent(u.pathname.replace(/^\//, '')) || '(default database)'}`;
}

/** Checks the URL's form; returns it unchanged or throws a SettingError naming the setting. */
export function checkPostgresUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SettingError(DATABASE_URL_SETTING, `is not a URL; write it as ${URL_EXAMPLE}`);
  }
  if (!SCHEMES.has(url.protocol)) {
    throw new SettingError(DATABASE_URL_SETTING, `must start with postgres:// or postgresql:// (got ${url.protocol}//); write it as ${URL_EXAMPLE}`);
  }
  if (!url.hostname && !url.searchParams.get('host')) {
    throw new SettingError(DATABASE_URL_SETTING, `names no host; write it as ${URL_EXAMPLE}`);
  }
  return raw;
}

/** A start-up failure the operator fixes in the URL or the database, as a SettingError naming it; undefined for other errors. */
export function postgresStartError(err: unknown, url: string): SettingError | undefined {
  const cause = (err as { cause?: unknown }).cause ?? err;
  const code = (cause as { code?: unknown }).code;
  const detail = redactUrl(cause instanceof Error ? cause.message : String(cause), url);
  const target = describeTarget(url);
  if (isPgUnavailable(cause)) {
    return new SettingError(DATABASE_URL_SETTING, `cannot reach PostgreSQL at ${target} (${detail}); check the host, port and that the database server is running`);
  }
  if (typeof code === 'string' && REFUSED_SQLSTATE_RE.test(code)) {
    return new SettingError(DATABASE_URL_SETTING, `PostgreSQL at ${target} refused the connection (${detail}); check the user, password and database name`);
  }
  if (err instanceof TypeError || (cause instanceof Error && /invalid connection string|Invalid URL/i.test(cause.message))) {
    return new SettingError(DATABASE_URL_SETTING, `cannot be used (${detail}); write it as ${URL_EXAMPLE}`);
  }
  return undefined;
}
