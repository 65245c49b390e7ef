/**
 * `config-sidecar restore --from FILE`: restores a backup made by `backup`
 * (SQLite file, or a pg_dump archive with --database-url) into a new data
 * directory or an empty database, and `restore --in-place` marks a store
 * restored by other means (point-in-time recovery, a promoted standby). Both
 * give the store a new identity, move its revision counter ahead and mark the
 * whole log compacted, so every agent resyncs instead of resuming past writes
 * it never saw (src/server/store/restore.ts).
 */
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import { action, CliError, EXIT } from './cli-util.ts';

interface RestoreFlags {
  from?: string;
  inPlace?: boolean;
  dataDir: string;
  databaseUrl?: string;
}

async function restore(flags: RestoreFlags): Promise<void> {
  if (flags.from === undefined && !flags.inPlace) {
    throw new CliError('say what to restore: --from FILE (a backup made by `config-sidecar backup`), or --in-place for a store restored by other means', EXIT.usage);
  }
  if (flags.from !== undefined && flags.inPlace) throw new CliError('--from and --in-place exclude each other: --from restores a backup into an empty store, --in-place marks an existing one', EXIT.usage);
  const [{ existsSync }, restoreModule, { AppError }, { SQLITE_FILE_NAME }] = await Promise.all([
    import('node:fs'),
    import('../server/store/restore.ts'),
    import('../shared/errors.ts'),
    import('../server/store/sqlite-store.ts'),
  ]);
  if (flags.from !== undefined && !existsSync(flags.from)) throw new CliError(`--from "${flags.from}" does not exist; give the file \`config-sidecar backup --to\` wrote`, EXIT.usage);
  const now = (): number => Date.now();
  const where = flags.databaseUrl ? 'the PostgreSQL database' : flags.dataDir;
  let outcome: Awaited<ReturnType<typeof restoreModule.markRestored>>;
  try {
    if (flags.databaseUrl) {
      const [{ openStore }, { checkPostgresUrl, redactUrl }] = await Promise.all([import('../server/store/open-store.ts'), import('../server/store/postgres-url.ts')]);
      const url = checkPostgresUrl(flags.databaseUrl);
      const open = () => openStore({ dataDir: flags.dataDir, databaseUrl: url, now });
      if (flags.from !== undefined) {
        outcome = await restoreModule.restorePostgres(flags.from, url, open, (text) => redactUrl(text, url));
      } else {
        const store = await open();
        try {
          outcome = await restoreModule.markRestored(store);
        } finally {
          await store.close();
        }
      }
    } else if (flags.from !== undefined) {
      outcome = await restoreModule.restoreSqlite(flags.from, flags.dataDir, now);
    } else {
      const { join } = await import('node:path');
      if (!existsSync(join(flags.dataDir, SQLITE_FILE_NAME))) {
        throw new CliError(`--data-dir "${flags.dataDir}" holds no store (${SQLITE_FILE_NAME}); point it at the restored data directory`, EXIT.usage);
      }
      const { openSqliteStore } = await import('../server/store/sqlite-store.ts');
      const store = await openSqliteStore({ dataDir: flags.dataDir, now, create: false });
      try {
        outcome = await restoreModule.markRestored(store);
      } finally {
        await store.close();
      }
    }
  } catch (err) {
    // A refusal (a store already there, not a backup) is the caller's to fix; nothing was changed.
    if (err instanceof AppError && (err.code === 'conflict' || err.code === 'invalid_argument')) throw new CliError(err.message, EXIT.usage);
    throw err;
  }
  const { state, previousStoreId } = outcome;
  process.stdout.write(
    `${flags.from !== undefined ? `restored ${flags.from} into ${where}` : `marked ${where} as restored`}: new store id ${state.storeId} (was ${previousStoreId}); ` +
      `revisions continue after ${state.revision}, and every agent resyncs when it reconnects\n`,
  );
}

export function register(program: Command): void {
  program
    .command('restore')
    .description('Restore a backup made by `backup` as a new store identity (agents resync), or mark a store restored by other means.')
    .option('--from <file>', 'the backup file: a SQLite file, or a pg_dump archive with --database-url')
    .option('--in-place', 'mark the existing store at --data-dir / --database-url as restored (after point-in-time recovery or a promoted standby)')
    .addOption(new Option('--data-dir <dir>', 'the new (empty) store directory; for --in-place, the restored one').env(envNameFor('--data-dir')).default('.config-sidecar/server'))
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL of an empty database (runs pg_restore, needed on PATH); for --in-place, the restored one').env(envNameFor('--database-url')))
    .addHelpText(
      'after',
      `
Stop every server that uses the store first; start them again afterwards with
the same KEK as the backup. Like etcd's snapshot restore with --bump-revision
--mark-compacted, the restored store gets a new store id, its revision counter
moves 1,000,000 ahead and its whole event log counts as compacted: an agent
resuming from a position in the old store (or in the store the backup came
from) gets ResyncRequired, drops what it learnt and refetches, instead of
resuming past writes it never saw. Nothing is overwritten: --from refuses a
data directory or database that already holds a store.

Examples:
  $ config-sidecar restore --from /backups/config-sidecar-2026-01-01.db --data-dir /var/lib/config-sidecar-restored
  $ CONFIG_SIDECAR_DATABASE_URL=postgres://.../config_sidecar_new config-sidecar restore --from ./snapshot.dump
  $ CONFIG_SIDECAR_DATABASE_URL=postgres://... config-sidecar restore --in-place   # after PITR or promoting a standby`,
    )
    .action(action(restore));
}
