/**
 * `config-sidecar verify`: the full `PRAGMA integrity_check` of the embedded
 * store, which start-up replaces by the quicker `quick_check`
 * (src/server/store/sqlite-file-check.ts). It reads a snapshot of the file and
 * takes no lock, so it runs beside a server.
 */
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import { action, CliError, EXIT } from './cli-util.ts';

export function register(program: Command): void {
  program
    .command('verify')
    .description('Check the embedded store file page by page (PRAGMA integrity_check); safe while a server runs.')
    .addOption(new Option('--data-dir <dir>', 'store directory').env(envNameFor('--data-dir')).default('.config-sidecar/server'))
    .addHelpText(
      'after',
      `
The server runs the quicker PRAGMA quick_check at every start and refuses a file
that fails it; this command adds the index-to-table cross-check.

Examples:
  $ config-sidecar verify --data-dir /var/lib/config-sidecar
  $ config-sidecar verify          # the dev stack's store (.config-sidecar/server)

Exit codes: 0 the file is sound, 1 damaged or missing (the problems are listed).`,
    )
    .action(
      action(async (flags: { dataDir: string }) => {
        const [{ join }, { SQLITE_FILE_NAME }, { verifyStoreFile, describeProblems }] = await Promise.all([
          import('node:path'),
          import('../server/store/sqlite-store.ts'),
          import('../server/store/sqlite-file-check.ts'),
        ]);
        const file = join(flags.dataDir, SQLITE_FILE_NAME);
        const { problems, pages } = verifyStoreFile(file);
        if (problems.length > 0) {
          throw new CliError(`${file} is damaged: ${describeProblems(problems)}. Restore it from a backup (docs/OPERATIONS.md).`, EXIT.failed);
        }
        process.stdout.write(`${file}: ok (PRAGMA integrity_check, ${pages} pages)\n`);
      }),
    );
}
