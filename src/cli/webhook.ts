import type { Command } from 'commander';
import { action, CliError } from './cli-util.ts';

// Placeholder until the command lands; replaced by its component's owner.
export function register(program: Command): void {
  program
    .command('webhook')
    .description('(not implemented yet)')
    .action(
      action(() => {
        throw new CliError('webhook is not implemented yet');
      }),
    );
}
