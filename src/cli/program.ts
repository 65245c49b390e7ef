/**
 * `config-sidecar`: one CLI for every component, in the style of `vault server`
 * / `vault agent`, loaded by the bin (main.ts) once the runtime settings are
 * in place. This is the composition root: each command module registers
 * its flags here and imports its component lazily in its action, so `--help`
 * and the agent's start-up never load code they do not run.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { COMMAND_MODULES } from './commands.ts';

// This package's own version: npm sets npm_package_version to the version of the
// project npm runs in, which is the caller's when run through npx or a script.
// The path holds from src/cli and dist/cli alike.
const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('config-sidecar')
  .description('A low-latency config and secrets sidecar for Kubernetes.')
  .version(version)
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
  $ config-sidecar exec --env DB_PASSWORD=production/ml-service/db-password -- node server.js
  $ config-sidecar <command> --help                      # flags and examples of one command`,
);

await program.parseAsync(process.argv);
