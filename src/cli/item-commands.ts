/**
 * Operator commands against the control plane: `put`, `history`, `rollback`,
 * `rotate <namespace>` (REST), and the two local, store-level ones:
 * `rotate --kek` (offline re-wrap of every DEK under a new KEK) and
 * `backup --to FILE` (SQLite online backup, safe while the server runs).
 * The server URL comes from --server / CONFIG_SIDECAR_SERVER, the token from
 * CONFIG_SIDECAR_TOKEN or --token-file (never a flag value).
 */
import { readFileSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { Option, type Command } from 'commander';
import { envNameFor, readSecretSetting, SettingError } from '../shared/settings.ts';
import type { StoreAccess } from '../server/control-plane.ts';
import { action, CliError, EXIT } from './cli-util.ts';

const DEFAULT_SERVER = 'http://127.0.0.1:8420';

interface ServerFlags {
  server?: string;
  tokenFile?: string;
}

function withServer(command: Command): Command {
  return command
    .addOption(new Option('--server <url>', 'control plane REST URL').env(envNameFor('--server')).default(DEFAULT_SERVER))
    .addOption(new Option('--token-file <file>', 'bearer token file (or set CONFIG_SIDECAR_TOKEN)').env(envNameFor('--token-file')));
}

function itemPath(item: string): string {
  if (!/^[^/]+(\/[^/]+)+$/.test(item)) throw new CliError(`"${item}" is not namespace/name, e.g. production/ml-service/db-password`, EXIT.usage);
  return item.split('/').map(encodeURIComponent).join('/');
}

/** One REST call; server errors become CliErrors with the server's code, transport errors exit 3. */
async function call(flags: ServerFlags, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const token = readSecretSetting({ fileFlag: '--token-file', file: flags.tokenFile, envVar: 'CONFIG_SIDECAR_TOKEN' });
  if (!token) throw new CliError('a token is required: set CONFIG_SIDECAR_TOKEN or --token-file', EXIT.usage);
  const { request } = await import('undici');
  const server = flags.server ?? DEFAULT_SERVER;
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
    throw new CliError(`cannot reach the server at ${server}: ${(err as Error).message}. Is it running? (--server / CONFIG_SIDECAR_SERVER)`, EXIT.unreachable);
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

function print(json: boolean | undefined, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text}\n`);
}

/** Reads a value from a file or stdin (`-`). */
function readValueSource(file: string): Buffer {
  try {
    return readFileSync(file === '-' ? 0 : file);
  } catch (err) {
    throw new CliError(`cannot read --file "${file}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`, EXIT.usage);
  }
}

function registerPut(program: Command): void {
  withServer(
    program
      .command('put')
      .description('Write a new version of an item (one environment layer).')
      .argument('<item>', 'namespace/name')
      .argument('[value]', 'config: a JSON value; secrets must come from --file or stdin, never the command line')
      .addOption(new Option('--kind <kind>', 'config or secret').choices(['config', 'secret']).default('config'))
      .addOption(new Option('--env <name>', 'environment layer to write').env(envNameFor('--env')).default('base'))
      .addOption(new Option('--file <file>', 'read the value from a file ("-" = stdin)')),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar put production/ml-service/settings '{"replicas": 3}'
  $ config-sidecar put production/ml-service/settings '{"replicas": 5}' --env prod
  $ printf %s "$DB_PASSWORD" | config-sidecar put production/ml-service/db-password --kind secret --file -
  $ config-sidecar put production/ml-service/tls-key --kind secret --file ./tls.key --env prod

Exit codes: 0 written, 1 refused, 2 bad usage, 3 server unreachable.`,
    )
    .action(
      action(async (item: string, value: string | undefined, flags: ServerFlags & { kind: 'config' | 'secret'; env: string; file?: string; json?: boolean }) => {
        const path = itemPath(item);
        if (value !== undefined && flags.file) throw new CliError('give the value as an argument or --file, not both', EXIT.usage);
        let body: unknown;
        if (flags.kind === 'secret') {
          if (value !== undefined) throw new CliError('a secret on the command line would show in `ps` and shell history; use --file FILE or --file - (stdin)', EXIT.usage);
          if (!flags.file) throw new CliError('a secret needs --file FILE or --file - (stdin)', EXIT.usage);
          const bytes = readValueSource(flags.file);
          body = isUtf8(bytes) ? { kind: 'secret', value: bytes.toString('utf8') } : { kind: 'secret', valueBase64: bytes.toString('base64') };
          bytes.fill(0);
        } else {
          const text = flags.file ? readValueSource(flags.file).toString('utf8') : value;
          if (text === undefined) throw new CliError('give a JSON value as an argument or --file', EXIT.usage);
          try {
            body = { kind: 'config', value: JSON.parse(text) as unknown };
          } catch {
            throw new CliError(`the config value is not JSON: ${text.slice(0, 60)} (quote strings: '"text"')`, EXIT.usage);
          }
        }
        const result = await call(flags, 'PUT', `/v1/items/${path}?env=${encodeURIComponent(flags.env)}`, body);
        print(false, result, `wrote ${item} (${flags.env}) version ${String(result.version)}, revision ${String(result.revision)}`);
      }),
    );
}

function registerHistory(program: Command): void {
  withServer(program.command('history').description('List the versions of an item.').argument('<item>', 'namespace/name').addOption(new Option('--json', 'print JSON')))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar history production/ml-service/settings
  $ config-sidecar history production/ml-service/settings --json | jq '.versions[-1]'`,
    )
    .action(
      action(async (item: string, flags: ServerFlags & { json?: boolean }) => {
        const result = (await call(flags, 'GET', `/v1/history/${itemPath(item)}`)) as {
          kind: string;
          versions: Array<{ version: number; env: string; revision: number; createdAt: string; createdBy: string; deleted: boolean }>;
        };
        const lines = [`${item} (${result.kind})`, 'VERSION  ENV       REVISION  CREATED                   BY', ...result.versions.map((v) =>
          `${String(v.version).padEnd(8)} ${v.env.padEnd(9)} ${String(v.revision).padEnd(9)} ${v.createdAt.padEnd(25)} ${v.createdBy}${v.deleted ? '  (deleted)' : ''}`,
        )];
        print(flags.json, result, lines.join('\n'));
      }),
    );
}

function registerRollback(program: Command): void {
  withServer(
    program
      .command('rollback')
      .description('Write a new version equal to an old one (same environment layer).')
      .argument('<item>', 'namespace/name')
      .requiredOption('--to <version>', 'the version to restore'),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar history production/ml-service/settings
  $ config-sidecar rollback production/ml-service/settings --to 3`,
    )
    .action(
      action(async (item: string, flags: ServerFlags & { to: string }) => {
        const version = Number(flags.to);
        if (!Number.isInteger(version) || version < 1) throw new CliError(`--to "${flags.to}" is not a version number`, EXIT.usage);
        const result = await call(flags, 'POST', `/v1/rollback/${itemPath(item)}`, { version });
        print(false, result, `rolled ${item} back to version ${version}: new version ${String(result.version)}, revision ${String(result.revision)}`);
      }),
    );
}

function registerRotate(program: Command): void {
  withServer(
    program
      .command('rotate')
      .description('Rotate a namespace data key (online), or with --kek re-wrap every data key under a new KEK (offline).')
      .argument('[namespace]', 'namespace whose DEK to rotate')
      .addOption(new Option('--kek', 're-wrap every DEK under a new KEK (stop the server first)'))
      .addOption(new Option('--data-dir <dir>', 'store directory for --kek').env(envNameFor('--data-dir')).default('.config-sidecar/server'))
      .addOption(new Option('--database-url <url>', 'PostgreSQL URL for --kek').env(envNameFor('--database-url')))
      .addOption(new Option('--kek-file <file>', 'the current KEK (or CONFIG_SIDECAR_KEK)').env(envNameFor('--kek-file')))
      .addOption(new Option('--new-kek-file <file>', 'the new KEK (or CONFIG_SIDECAR_NEW_KEK)').env(envNameFor('--new-kek-file'))),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar rotate production/ml-service                 # new DEK version, values re-encrypted, KeyRotated streamed
  $ openssl rand -base64 32 > new.kek
  $ config-sidecar rotate --kek --data-dir /var/lib/config-sidecar --kek-file old.kek --new-kek-file new.kek
    # then restart the server with --kek-file new.kek (values are untouched; only wrapped DEKs change)`,
    )
    .action(
      action(async (namespace: string | undefined, flags: ServerFlags & { kek?: boolean; dataDir: string; databaseUrl?: string; kekFile?: string; newKekFile?: string }) => {
        if (flags.kek) {
          if (namespace) throw new CliError('--kek rotates the KEK of the whole store; drop the namespace argument', EXIT.usage);
          await rotateKek(flags);
          return;
        }
        if (!namespace) throw new CliError('name the namespace to rotate, or pass --kek', EXIT.usage);
        const path = namespace.split('/').map(encodeURIComponent).join('/');
        const result = await call(flags, 'POST', `/v1/rotate/${path}`);
        print(false, result, `rotated ${namespace}: key version ${String(result.keyVersion)}, revision ${String(result.revision)}`);
      }),
    );
}

/**
 * Opens the store a command works on, never creating one: `rotate --kek` takes
 * the store lock (refused while a server holds the directory); `backup` shares
 * the file with a running server.
 */
async function openLocalPlane(flags: { dataDir: string; databaseUrl?: string; kekFile?: string }, storeAccess: StoreAccess) {
  const [{ loadLocalKek }, { openControlPlane }, { systemClock }, { createLogger }] = await Promise.all([
    import('../server/kek.ts'),
    import('../server/control-plane-impl.ts'),
    import('../shared/clock.ts'),
    import('../shared/logger.ts'),
  ]);
  const kek = loadLocalKek({ file: flags.kekFile });
  if (!kek) {
    throw new SettingError(
      '--kek-file (CONFIG_SIDECAR_KEK)',
      'the KEK the server runs with is required (base64 of 32 bytes; it unlocks the store\'s data keys): pass --kek-file FILE or set CONFIG_SIDECAR_KEK. `dev` keeps its KEK in .config-sidecar/dev-kek',
    );
  }
  const plane = await openControlPlane({
    dataDir: flags.dataDir,
    databaseUrl: flags.databaseUrl,
    kek,
    environments: ['base', 'dev', 'staging', 'prod'],
    maxVersionsPerItem: 20,
    keyMaxAge: 90 * 86_400_000,
    retainEvents: 100_000,
    clock: systemClock,
    logger: createLogger({ component: 'cli', level: 'warn' }),
    storeAccess,
  });
  return { plane, kek };
}

async function rotateKek(flags: { dataDir: string; databaseUrl?: string; kekFile?: string; newKekFile?: string }): Promise<void> {
  const { kekFromBase64 } = await import('../server/kek.ts');
  const text = readSecretSetting({ fileFlag: '--new-kek-file', file: flags.newKekFile, envVar: 'CONFIG_SIDECAR_NEW_KEK' });
  if (!text) throw new CliError('the new KEK is required: --new-kek-file or CONFIG_SIDECAR_NEW_KEK', EXIT.usage);
  const next = kekFromBase64(text, flags.newKekFile ? `--new-kek-file (${flags.newKekFile})` : 'CONFIG_SIDECAR_NEW_KEK');
  const { plane, kek } = await openLocalPlane(flags, { exclusive: true, create: false });
  try {
    if (next.id === kek.id) throw new CliError('the new KEK is the same as the current one', EXIT.usage);
    const { rewrapped } = await plane.rotateKek(next);
    process.stdout.write(`re-wrapped ${rewrapped} data key(s) under ${next.id}; restart the server with the new KEK\n`);
  } finally {
    await plane.close();
    next.destroy();
  }
}

function registerBackup(program: Command): void {
  program
    .command('backup')
    .description('Copy the store to a file: SQLite online backup, or pg_dump with --database-url (both safe while servers run).')
    .requiredOption('--to <file>', 'destination file (must not exist)')
    .addOption(new Option('--data-dir <dir>', 'store directory').env(envNameFor('--data-dir')).default('.config-sidecar/server'))
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL: runs pg_dump --format=custom (needs pg_dump on PATH)').env(envNameFor('--database-url')))
    .addOption(new Option('--kek-file <file>', 'the store KEK, checked before copying (or CONFIG_SIDECAR_KEK)').env(envNameFor('--kek-file')))
    .addHelpText(
      'after',
      `
The backup holds only ciphertext and wrapped keys; restoring it needs the same KEK.

Examples:
  $ config-sidecar backup --to /backups/config-sidecar-$(date +%F).db --data-dir /var/lib/config-sidecar
  $ CONFIG_SIDECAR_KEK=... config-sidecar backup --to ./snapshot.db
  $ CONFIG_SIDECAR_DATABASE_URL=postgres://... config-sidecar backup --to ./snapshot.dump   # restore with pg_restore`,
    )
    .action(
      action(async (flags: { to: string; dataDir: string; databaseUrl?: string; kekFile?: string }) => {
        const { existsSync } = await import('node:fs');
        if (existsSync(flags.to)) throw new CliError(`--to "${flags.to}" exists; choose a new file`, EXIT.usage);
        const { plane } = await openLocalPlane(flags, { exclusive: false, create: false });
        try {
          await plane.backup(flags.to);
        } finally {
          await plane.close();
        }
        process.stdout.write(`backed up ${flags.databaseUrl ? 'the PostgreSQL database' : flags.dataDir} to ${flags.to}\n`);
      }),
    );
}

export function register(program: Command): void {
  registerPut(program);
  registerHistory(program);
  registerRollback(program);
  registerRotate(program);
  registerBackup(program);
}
