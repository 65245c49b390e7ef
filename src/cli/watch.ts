/**
 * `config-sidecar watch <prefix>`: prints each change the local agent applies
 * under a namespace prefix, one line per event, resuming across agent
 * restarts (Last-Event-ID); a `resync` line means "refetch what you use".
 */
import { Option, type Command } from 'commander';
import { action, CliError, EXIT } from './cli-util.ts';

export function register(program: Command): void {
  program
    .command('watch')
    .description('Print every change the local agent applies under a namespace prefix (Server-Sent Events, resumed across restarts).')
    .argument('<prefix>', 'namespace prefix, e.g. production/ml-service')
    .addOption(new Option('--socket <path>', 'agent socket (default: /run/config-sidecar/agent.sock)').env('CONFIG_SIDECAR_SOCKET'))
    .addOption(new Option('--last-event-id <revision>', 'resume after this revision'))
    .addOption(new Option('--json', 'print each event as a JSON line'))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar watch production/ml-service
  $ config-sidecar watch production --json | jq .
  $ config-sidecar watch production/ml-service --last-event-id 1234`,
    )
    .action(
      action(async (prefix: string, flags: { socket?: string; lastEventId?: string; json?: boolean }) => {
        const { createClient, ConfigSidecarError } = await import('../client/index.ts');
        const client = createClient(flags.socket ? { socketPath: flags.socket } : {});
        const controller = new AbortController();
        const stop = (): void => controller.abort();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          let warned = '';
          const onReconnect = (reason: string): void => {
            // One line per distinct reason, not one per retry.
            if (reason !== warned) process.stderr.write(`config-sidecar: ${reason}; reconnecting (resuming after the last event)\n`);
            warned = reason;
          };
          for await (const event of client.watch(prefix, { signal: controller.signal, onReconnect, ...(flags.lastEventId ? { lastEventId: flags.lastEventId } : {}) })) {
            warned = '';
            if (flags.json) {
              process.stdout.write(`${JSON.stringify(event)}\n`);
              continue;
            }
            const what = event.name ? `${event.namespace}/${event.name}` : event.namespace || prefix;
            const version = event.version !== undefined ? ` ${event.type === 'rotated' ? 'key ' : ''}v${event.version}` : '';
            process.stdout.write(`${event.type.padEnd(8)} ${what}${version} (revision ${event.revision})\n`);
          }
        } catch (err) {
          if (err instanceof ConfigSidecarError) throw new CliError(`${err.message} (${err.code})`, err.status === 400 ? EXIT.usage : EXIT.failed);
          throw err;
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          await client.close();
        }
      }),
    );
}
