/**
 * A throwaway PostgreSQL cluster for tests: `initdb` into a temp dir, `pg_ctl`
 * listening only on a Unix socket in that dir, run as the `postgres` user when
 * the tests run as root (PostgreSQL refuses root). Removed by `stop()`.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);
const REQUIRED_BINARIES = ['initdb', 'pg_ctl', 'postgres'];
/** The Unix socket is named after the port; nothing listens on TCP. */
const SOCKET_PORT = 5432;

/** The directory holding initdb, pg_ctl and postgres, or undefined when PostgreSQL is not installed. */
export function findPostgresBin(): string | undefined {
  const candidates = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  const versioned = '/usr/lib/postgresql';
  if (existsSync(versioned)) {
    for (const version of readdirSync(versioned).sort().reverse()) candidates.push(join(versioned, version, 'bin'));
  }
  return candidates.find((dir) => REQUIRED_BINARIES.every((bin) => existsSync(join(dir, bin))));
}

/** The path of a PostgreSQL program (pg_dump, pg_restore…): the versioned install first, then PATH; undefined when absent. */
export function postgresTool(name: string): string | undefined {
  const dirs: string[] = [];
  const versioned = '/usr/lib/postgresql';
  if (existsSync(versioned)) for (const version of readdirSync(versioned).sort().reverse()) dirs.push(join(versioned, version, 'bin'));
  dirs.push(...(process.env.PATH ?? '').split(delimiter).filter(Boolean));
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

export interface DatabaseOptions {
  /**
   * An ICU locale for the database's default collation (e.g. `en-US`, what
   * most production clusters sort by): text then does not compare by bytes,
   * which the C locale of a test machine's cluster would hide.
   */
  readonly icuLocale?: string;
}

/** Creates a new empty database through `adminUrl` (any database of the cluster); returns its URL. */
export async function createDatabaseOn(adminUrl: string, options: DatabaseOptions = {}): Promise<string> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const icu = options.icuLocale === undefined ? '' : ` TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '${options.icuLocale.replace(/[^A-Za-z0-9_-]/g, '')}'`;
    await admin.query(`CREATE DATABASE ${name}${icu}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * Appends `count` events and compacts the log through them in one transaction
 * that sends NOTIFY, as other replicas writing and compacting while a replica
 * was cut off would leave it: that replica's next read finds them gone.
 * Returns the last revision compacted.
 */
export async function appendAndCompact(url: string, count: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('BEGIN');
    let revision = 0;
    for (let i = 0; i < count; i++) {
      revision = Number((await client.query('UPDATE revision_counter SET revision = revision + 1 WHERE id = 1 RETURNING revision')).rows[0].revision);
      await client.query("INSERT INTO events (revision, type, namespace, key_version, created_at) VALUES ($1, 'keyRotated', 'gone/app', 1, 0)", [revision]);
    }
    await client.query('DELETE FROM events WHERE revision <= $1', [revision]);
    await client.query('UPDATE revision_counter SET compacted_through = $1 WHERE id = 1', [revision]);
    await client.query("SELECT pg_notify('config_sidecar_events', '')");
    await client.query('COMMIT');
    return revision;
  } finally {
    await client.end();
  }
}

export interface ThrowawayPostgres {
  /** The cluster's `postgres` database, for creating others (e.g. from another test process). */
  readonly adminUrl: string;
  /** A new empty database; returns its connection URL. */
  createDatabase(options?: DatabaseOptions): Promise<string>;
  /** Stops the database server, keeping its data (`pg_ctl stop -m fast`: clients are disconnected). */
  shutdown(): Promise<void>;
  /** Crashes the database server (`pg_ctl stop -m immediate`: no checkpoint, WAL recovery on the next start), keeping its data. */
  crash(): Promise<void>;
  /** Starts it again on the same socket; resolves once it accepts connections. */
  restart(): Promise<void>;
  /** Runs one statement on `url` and returns its rows. */
  query(url: string, sql: string): Promise<Array<Record<string, unknown>>>;
  stop(): Promise<void>;
}

export async function startThrowawayPostgres(): Promise<ThrowawayPostgres> {
  const bin = findPostgresBin();
  if (!bin) throw new Error('PostgreSQL binaries not found');
  const dir = await mkdtemp(join(tmpdir(), 'cs-pg-'));
  const user = postgresUser();
  if (user) chownSync(dir, user.uid, user.gid);
  const as = user ? { uid: user.uid, gid: user.gid } : {};
  const data = join(dir, 'data');
  await run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'], { ...as, cwd: dir });
  const start = () =>
    run(join(bin, 'pg_ctl'), ['-D', data, '-l', join(dir, 'log'), '-w', '-o', `-k ${dir} -p ${SOCKET_PORT} -c listen_addresses= -c fsync=off`, 'start'], {
      ...as,
      cwd: dir,
    });
  await start();
  const urlFor = (db: string) => `postgresql://postgres@localhost/${db}?host=${encodeURIComponent(dir)}&port=${SOCKET_PORT}`;
  return {
    adminUrl: urlFor('postgres'),
    createDatabase: (options) => createDatabaseOn(urlFor('postgres'), options),
    async shutdown() {
      await run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop'], { ...as, cwd: dir });
    },
    async crash() {
      await run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'], { ...as, cwd: dir });
    },
    async restart() {
      await start();
    },
    async query(url, sql) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return (await client.query(sql)).rows as Array<Record<string, unknown>>;
      } finally {
        await client.end();
      }
    },
    async stop() {
      await run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'], { ...as, cwd: dir }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
