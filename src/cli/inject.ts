import type { Command } from 'commander';
import { action, CliError } from './cli-util.ts';

// Placeholder until the command lands; replaced by its component's owner.
export function register(program: Command): void {
  program
    .command('inject')
    .description('(not implemented yet)')
    .action(
      action(() => {
        throw new CliError('inject is not implemented yet');
      }),
    );
}
