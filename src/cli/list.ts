/** `config-sidecar list <prefix>`: the items under a namespace prefix (REST `GET /v1/list/{prefix}`, every page). */
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import { action } from './cli-util.ts';
import { listAllItems } from './item-listing.ts';
import { DEFAULT_SERVER, outputFormat, outputOption, printAs, type ServerFlags } from './server-client.ts';

export function register(program: Command): void {
  program
    .command('list')
    .description('List the items under a namespace prefix (whole segments), with their layers; every page of the server\'s answer, in byte order of namespace and name.')
    .argument('[prefix]', 'namespace prefix, e.g. production/ml-service (default: everything the token may list)', '')
    .addOption(new Option('--server <url>', `control plane REST URL (default: the one \`login\` stored, else ${DEFAULT_SERVER})`).env(envNameFor('--server')))
    .addOption(new Option('--token-file <file>', 'bearer token file (or set CONFIG_SIDECAR_TOKEN; default: the token `login` stored)').env(envNameFor('--token-file')))
    .addOption(outputOption())
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar list production/ml-service
  $ config-sidecar list production -o json | jq -r '.items[].name'

Exit codes: 0 listed (also when empty), 1 refused, 2 bad usage, 3 server unreachable.`,
    )
    .action(
      action(async (prefix: string, flags: ServerFlags & { output?: string }) => {
        const result = { items: await listAllItems(flags, prefix) };
        await printAs(outputFormat(flags), result, () =>
          result.items.length === 0
            ? `no items under "${prefix}"`
            : ['ITEM'.padEnd(48) + ' KIND    VERSION  REVISION  ENVS', ...result.items.map((i) =>
                `${`${i.namespace}/${i.name}`.padEnd(48)} ${i.kind.padEnd(7)} ${String(i.version).padEnd(8)} ${String(i.revision).padEnd(9)} ${i.envs.join(',')}`,
              )].join('\n'),
        );
      }),
    );
}
