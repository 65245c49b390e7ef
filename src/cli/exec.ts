/**
 * `config-sidecar exec [flags] -- command [args...]`: runs an application
 * with config and secrets from the local agent in its environment, and
 * restarts or signals it when they change (src/cli/exec/).
 */
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import { action } from './cli-util.ts';

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

export function register(program: Command): void {
  program
    .command('exec')
    .description('Run a command with values from the local agent in its environment; restart or signal it when they change.')
    .argument('<command...>', 'the command and its arguments, after --')
    .addOption(new Option('--env <NAME=namespace/name>', 'set NAME to an item (a config item narrowed with #/json/pointer); repeatable').argParser(collect))
    .addOption(new Option('--env-prefix <PREFIX_=namespace/name>', 'set PREFIX_KEY for each top-level key of a JSON config item; repeatable').argParser(collect))
    .addOption(new Option('--env-file <file>', 'NAME=namespace/name[#/pointer] lines (# comments) to read the references from').env(envNameFor('--env-file')))
    .addOption(new Option('--on-change <action>', 'restart | signal:<SIGNAME> | none (default: restart)').env(envNameFor('--on-change')))
    .addOption(new Option('--debounce <duration>', 'changes within this window after an action are folded into one more action (default: 1s)').env(envNameFor('--debounce')))
    .addOption(new Option('--grace <duration>', 'after SIGTERM, how long the command may take to exit before SIGKILL (default: 10s)').env(envNameFor('--grace')))
    .addOption(new Option('--wait <duration>', 'how long to wait for the agent to answer at start (default: 30s)').env(envNameFor('--wait')))
    .addOption(new Option('--socket <path>', 'agent socket (default: /run/config-sidecar/agent.sock)').env('CONFIG_SIDECAR_SOCKET'))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar exec --env DB_PASSWORD=production/ml-service/db-password -- node server.js
  $ config-sidecar exec --env DB_HOST=production/ml-service/settings#/db/host \\
      --env-prefix SETTINGS_=production/ml-service/settings --on-change signal:SIGHUP -- ./server
  $ config-sidecar exec --env-file /etc/app/env.refs --debounce 5s --grace 30s -- python app.py

The command inherits this environment plus the referenced values; nothing is
written to disk and no value is printed. When a referenced value changes (seen
through the agent's /v1/watch), --on-change restart stops the command
(SIGTERM, SIGKILL after --grace) and starts it again with the new values;
signal:<SIGNAME> sends it that signal instead. The first change acts at once;
further changes within --debounce are folded into one more action, and a
change set is one change. SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are
forwarded; after SIGINT or SIGTERM no child is left once exec exits. Run it
under an init (tini, docker --init) to reap grandchildren and for SIGKILL.

Exit codes: the command's own (128 + n if it died of signal n), 127 command not
found, 126 not executable, 1 an item cannot be read or set, 2 bad usage,
3 the agent did not answer within --wait.`,
    )
    .action(
      action(async (argv: string[], flags: Record<string, unknown>) => {
        const [{ loadExecSettings }, { runExec }, { createClient, DEFAULT_SOCKET_PATH }, { systemClock }] = await Promise.all([
          import('./exec/exec-settings.ts'),
          import('./exec/exec-runner.ts'),
          import('../client/index.ts'),
          import('../shared/clock.ts'),
        ]);
        const settings = loadExecSettings(flags, argv);
        const client = createClient(settings.socket ? { socketPath: settings.socket } : {});
        let code: number;
        try {
          code = await runExec(settings, {
            client,
            clock: systemClock,
            log: (line) => process.stderr.write(`config-sidecar exec: ${line}\n`),
            socketLabel: settings.socket ?? DEFAULT_SOCKET_PATH,
          });
        } finally {
          await client.close();
        }
        // Open watch sockets or timers must not keep exec alive after its child.
        process.exit(code);
      }),
    );
}
