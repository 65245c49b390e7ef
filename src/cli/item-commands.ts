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
import { DEFAULT_ENV } from '../shared/protocol-constants.ts';
import { envNameFor, readSecretSetting, SettingError } from '../shared/settings.ts';
import type { StoreAccess } from '../server/control-plane.ts';
import { action, CliError, EXIT } from './cli-util.ts';
import { call, DEFAULT_SERVER, outputFormat, outputOption, printAs, type ServerFlags } from './server-client.ts';

export function withServer(command: Command): Command {
  return command
    .addOption(new Option('--server <url>', `control plane REST URL (default: the one \`login\` stored, else ${DEFAULT_SERVER})`).env(envNameFor('--server')))
    .addOption(new Option('--token-file <file>', 'bearer token file (or set CONFIG_SIDECAR_TOKEN; default: the token `login` stored)').env(envNameFor('--token-file')));
}

function itemPath(item: string): string {
  if (!/^[^/]+(\/[^/]+)+$/.test(item)) throw new CliError(`"${item}" is not namespace/name, e.g. production/ml-service/db-password`, EXIT.usage);
  return item.split('/').map(encodeURIComponent).join('/');
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
      .description('Write a new version of an item (one environment layer), or a change set from a file (all or nothing).')
      .argument('[item]', 'namespace/name (not with --from-file)')
      .argument('[value]', 'config: a JSON value; secrets must come from --file or stdin, never the command line')
      .addOption(new Option('--kind <kind>', 'config or secret').choices(['config', 'secret']).default('config'))
      .addOption(new Option('--env <name>', `environment layer to write (the one \`get\` and the agent read by default)`).env(envNameFor('--env')).default(DEFAULT_ENV))
      .addOption(new Option('--file <file>', 'read the value from a file ("-" = stdin)'))
      .addOption(new Option('--ring-grace <duration>', 'keep each version that stops being current readable this long (a key ring, e.g. 24h; 0s turns it off); kept with the item'))
      .addOption(new Option('--revoke-previous', 'end the grace of every previous version at once (a compromised key)'))
      .addOption(new Option('--from-file <changes.yaml>', 'write the change set in this YAML/JSON file atomically (POST /v1/changes); see docs/SERVER.md')),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar put production/ml-service/settings '{"replicas": 3}'
  $ config-sidecar put production/ml-service/settings '{"replicas": 5}' --env prod
  $ printf %s "$DB_PASSWORD" | config-sidecar put production/ml-service/db-password --kind secret --file -
  $ config-sidecar put production/ml-service/tls-key --kind secret --file ./tls.key --env prod
  $ config-sidecar put --from-file changes.yaml     # several items, committed together or not at all
  $ config-sidecar put production/auth/signing-key --file jwk.json --ring-grace 24h   # verifiers keep the old key a day
  $ config-sidecar put production/auth/signing-key --file jwk.json --revoke-previous  # the old key leaked: drop it now

A change file lists up to 100 changes; a secret value can come from a file
next to it (valueFile, read by the CLI), so it never sits in the YAML:
  changes:
    - { item: production/db/username, kind: secret, value: app-v2 }
    - { item: production/db/password, kind: secret, valueFile: ./password.txt }
    - { item: production/db/settings, env: prod, kind: config, value: { pool: 5 } }
    - { item: production/db/old-flag, delete: true }

Exit codes: 0 written, 1 refused, 2 bad usage, 3 server unreachable.`,
    )
    .action(
      action(async (item: string | undefined, value: string | undefined, flags: ServerFlags & { kind: 'config' | 'secret'; env: string; file?: string; fromFile?: string; json?: boolean; ringGrace?: string; revokePrevious?: boolean }) => {
        const ring = { ...(flags.ringGrace === undefined ? {} : { ringGrace: flags.ringGrace }), ...(flags.revokePrevious ? { revokePrevious: true } : {}) };
        if (flags.fromFile !== undefined) {
          if (item !== undefined || flags.file) throw new CliError('--from-file writes the items listed in the file; give no item, value or --file with it', EXIT.usage);
          if (Object.keys(ring).length > 0) throw new CliError('with --from-file, give ringGrace / revokePrevious per entry in the file', EXIT.usage);
          const { readChangeFile } = await import('./change-file.ts');
          const body = readChangeFile(flags.fromFile);
          const result = (await call(flags, 'POST', '/v1/changes', body)) as { revision?: number; items?: Array<{ item: string; version: number }> };
          const items = result.items ?? [];
          print(false, result, `wrote ${items.length} change(s) as one set at revision ${String(result.revision)}:\n${items.map((i) => `  ${i.item} version ${i.version}`).join('\n')}`);
          return;
        }
        if (item === undefined) throw new CliError('give an item (namespace/name), or --from-file FILE for a change set', EXIT.usage);
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
        const result = await call(flags, 'PUT', `/v1/items/${path}?env=${encodeURIComponent(flags.env)}`, { ...(body as object), ...ring });
        print(false, result, `wrote ${item} (${flags.env}) version ${String(result.version)}, revision ${String(result.revision)}`);
        const overriddenBy = Array.isArray(result.overriddenBy) ? (result.overriddenBy as string[]) : [];
        if (overriddenBy.length > 0) {
          const how = flags.kind === 'secret' ? 'replaces it' : 'is merged over it';
          process.stderr.write(
            `config-sidecar: note: the ${overriddenBy.join(', ')} layer(s) of ${item} still override this write: a reader in ${overriddenBy.join(' or ')} gets that layer, which ${how}. ` +
              `Write with --env ${overriddenBy[overriddenBy.length - 1] as string}, or delete those layers (config-sidecar delete ${item} --env ENV).\n`,
          );
        }
      }),
    );
}

function registerHistory(program: Command): void {
  withServer(
    program.command('history').description('List the versions of an item.').argument('<item>', 'namespace/name').addOption(outputOption()).addOption(new Option('--json', 'same as -o json')),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar history production/ml-service/settings
  $ config-sidecar history production/ml-service/settings -o json | jq '.versions[-1]'
  $ config-sidecar history production/ml-service/settings -o yaml`,
    )
    .action(
      action(async (item: string, flags: ServerFlags & { json?: boolean; output?: string }) => {
        const result = (await call(flags, 'GET', `/v1/history/${itemPath(item)}`)) as {
          kind: string;
          versions: Array<{ version: number; env: string; revision: number; createdAt: string; createdBy: string; deleted: boolean }>;
        };
        const lines = [`${item} (${result.kind})`, 'VERSION  ENV       REVISION  CREATED                   BY', ...result.versions.map((v) =>
          `${String(v.version).padEnd(8)} ${v.env.padEnd(9)} ${String(v.revision).padEnd(9)} ${v.createdAt.padEnd(25)} ${v.createdBy}${v.deleted ? '  (deleted)' : ''}`,
        )];
        await printAs(outputFormat(flags), result, () => lines.join('\n'));
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
      .addOption(new Option('--retire-previous', 're-seal every version, history included, under the new key and destroy the older keys (online)'))
      .addOption(new Option('--reseal-history', 'the same offline, on the store itself (stop the server first); every namespace when none is named'))
      .addOption(new Option('--kek', 're-wrap every DEK under a new KEK (stop the server, every replica, first: refused while one runs)'))
      .addOption(new Option('--data-dir <dir>', 'store directory for --kek / --reseal-history').env(envNameFor('--data-dir')).default('.config-sidecar/server'))
      .addOption(new Option('--database-url <url>', 'PostgreSQL URL for --kek / --reseal-history').env(envNameFor('--database-url')))
      .addOption(new Option('--kek-file <file>', 'the current KEK (or CONFIG_SIDECAR_KEK)').env(envNameFor('--kek-file')))
      .addOption(new Option('--new-kek-file <file>', 'the new KEK (or CONFIG_SIDECAR_NEW_KEK)').env(envNameFor('--new-kek-file'))),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar rotate production/ml-service                 # new DEK version, values re-encrypted, KeyRotated streamed
  $ config-sidecar rotate production/ml-service --retire-previous   # a key was exposed: history re-sealed, old keys destroyed
  $ config-sidecar rotate --reseal-history --data-dir /var/lib/config-sidecar --kek-file server.kek   # the same offline, every namespace
  $ openssl rand -base64 32 > new.kek
  $ config-sidecar rotate --kek --data-dir /var/lib/config-sidecar --kek-file old.kek --new-kek-file new.kek
    # then restart the server with --kek-file new.kek (values are untouched; only wrapped DEKs change)
  $ kubectl scale deployment/config-sidecar-server --replicas=0    # PostgreSQL: refused while any replica is connected
  $ config-sidecar rotate --kek --database-url postgres://... --kek-file old.kek --new-kek-file new.kek`,
    )
    .action(
      action(async (namespace: string | undefined, flags: RotateFlags) => {
        if (flags.kek) {
          if (namespace) throw new CliError('--kek rotates the KEK of the whole store; drop the namespace argument', EXIT.usage);
          if (flags.resealHistory || flags.retirePrevious) throw new CliError('--kek re-wraps keys; run --reseal-history (or --retire-previous) as its own command', EXIT.usage);
          await rotateKek(flags);
          return;
        }
        if (flags.resealHistory) {
          if (flags.retirePrevious) throw new CliError('--reseal-history already retires the previous keys (offline); give one of the two', EXIT.usage);
          await resealHistory(namespace, flags);
          return;
        }
        if (!namespace) throw new CliError('name the namespace to rotate, or pass --kek or --reseal-history', EXIT.usage);
        const path = namespace.split('/').map(encodeURIComponent).join('/');
        const result = await call(flags, 'POST', `/v1/rotate/${path}${flags.retirePrevious ? '?retire-previous=true' : ''}`);
        const retired = Array.isArray(result.retiredVersions) ? `; retired key version(s) ${(result.retiredVersions as number[]).join(', ') || '(none)'}, ${String(result.resealed)} row(s) re-sealed` : '';
        print(false, result, `rotated ${namespace}: key version ${String(result.keyVersion)}, revision ${String(result.revision)}${retired}`);
      }),
    );
}

/**
 * Opens the store a command works on, never creating one: `rotate --kek` takes
 * the store lock (refused while a server holds the directory, or on PostgreSQL
 * while a replica is connected: postgres-exclusive.ts); `backup` shares
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

interface RotateFlags extends ServerFlags {
  kek?: boolean;
  retirePrevious?: boolean;
  resealHistory?: boolean;
  dataDir: string;
  databaseUrl?: string;
  kekFile?: string;
  newKekFile?: string;
}

/** `rotate --reseal-history`: the retire-previous rotation on the store itself, one namespace or every one. */
async function resealHistory(namespace: string | undefined, flags: RotateFlags): Promise<void> {
  const { plane } = await openLocalPlane(flags, { exclusive: true, create: false });
  try {
    const namespaces = namespace ? [namespace] : await plane.namespacesWithKeys();
    for (const ns of namespaces) {
      const result = await plane.rotateNamespace(ns, 'cli:rotate --reseal-history', { retirePrevious: true });
      await plane.audit({ subject: 'cli:rotate --reseal-history', action: 'rotate', target: ns, outcome: 'ok', detail: `keyVersion=${result.keyVersion} retired=${(result.retiredVersions ?? []).join(',') || 'none'} resealed=${result.resealed ?? 0}` });
      process.stdout.write(`re-sealed ${ns}: key version ${result.keyVersion}, ${result.resealed ?? 0} row(s); destroyed key version(s) ${(result.retiredVersions ?? []).join(', ') || '(none)'}\n`);
    }
    if (namespaces.length === 0) process.stdout.write('the store has no data keys yet; nothing to re-seal\n');
  } finally {
    await plane.close();
  }
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
