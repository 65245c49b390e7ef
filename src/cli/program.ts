/**
 * `config-sidecar`: one CLI for every component, in the style of `vault server`
 * / `vault agent`, loaded by the bin (main.ts) once the runtime settings are
 * in place. This is the composition root: each command module registers
 * its flags here and imports its component lazily in its action, so `--help`
 * and the agent's start-up never load code they do not run.
 */
import { Command } from 'commander';
import { COMMAND_MODULES } from './commands.ts';

const program = new Command('config-sidecar')
  .description('A low-latency config and secrets sidecar for Kubernetes.')
  .version(process.env.npm_package_version ?? '0.1.0')
  .showHelpAfterError('(add --help for usage and examples)')
  .configureHelp({ sortSubcommands: false });

for (const register of COMMAND_MODULES) register(program);

program.addHelpText(
  'after',
  `
Examples:
  $ config-sidecar dev                                   # server + agent with sample data
  $ config-sidecar server --data-dir /var/lib/config-sidecar
  $ config-sidecar agent --server http://127.0.0.1:8420 --server-grpc 127.0.0.1:8421 --prefix production/ml-service
  $ config-sidecar get production/ml-service/db-password # through the local agent
  $ config-sidecar <command> --help                      # flags and examples of one command`,
);

await program.parseAsync(process.argv);
