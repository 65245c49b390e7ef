/**
 * `config-sidecar delete <item>`: removes one environment layer (`--env`), or
 * the whole item (`--all-envs`); one of the two is required, so a missing
 * flag never deletes more than meant. History is kept (REST `DELETE /v1/items`).
 */
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import { action, CliError, EXIT } from './cli-util.ts';
import { call, DEFAULT_SERVER, type ServerFlags } from './server-client.ts';

export function register(program: Command): void {
  program
    .command('delete')
    .description('Delete one environment layer of an item (--env), or every layer (--all-envs); versions stay in history.')
    .argument('<item>', 'namespace/name')
    .addOption(new Option('--env <name>', 'the environment layer to delete'))
    .addOption(new Option('--all-envs', 'delete the item in every environment'))
    .addOption(new Option('--server <url>', `control plane REST URL (default: the one \`login\` stored, else ${DEFAULT_SERVER})`).env(envNameFor('--server')))
    .addOption(new Option('--token-file <file>', 'bearer token file (or set CONFIG_SIDECAR_TOKEN; default: the token `login` stored)').env(envNameFor('--token-file')))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar delete production/ml-service/settings --env staging
  $ config-sidecar delete production/ml-service/old-secret --all-envs
  $ config-sidecar rollback production/ml-service/settings --to 3   # undo: a new version equal to an old one

Exit codes: 0 deleted, 1 refused or not found, 2 bad usage, 3 server unreachable.`,
    )
    .action(
      action(async (item: string, flags: ServerFlags & { env?: string; allEnvs?: boolean }) => {
        if (!/^[^/]+(\/[^/]+)+$/.test(item)) throw new CliError(`"${item}" is not namespace/name, e.g. production/ml-service/db-password`, EXIT.usage);
        if (Boolean(flags.env) === Boolean(flags.allEnvs)) throw new CliError('say what to delete: --env NAME (one layer) or --all-envs (the whole item)', EXIT.usage);
        const path = item.split('/').map(encodeURIComponent).join('/');
        const result = await call(flags, 'DELETE', `/v1/items/${path}${flags.env ? `?env=${encodeURIComponent(flags.env)}` : ''}`);
        process.stdout.write(`deleted ${item} (${flags.env ?? 'every environment'}) at revision ${String(result.revision)}\n`);
      }),
    );
}
