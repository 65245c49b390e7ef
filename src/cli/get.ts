/**
 * `config-sidecar get <namespace/name>`: reads one value through the local
 * agent's socket (what an application sees), or with `--server` straight
 * from the control plane's REST API (an operator's view; needs a token).
 * Only the flag switches to the server: CONFIG_SIDECAR_SERVER, exported for
 * `put` and friends, gives the URL for `--server` but never changes where a
 * plain `get` reads. Both read DEFAULT_ENV unless told otherwise, like `put`.
 */
import { Option, type Command } from 'commander';
import { DEFAULT_ENV } from '../shared/protocol.ts';
import { envNameFor } from '../shared/settings.ts';
import { action, CliError, EXIT } from './cli-util.ts';
import { call, DEFAULT_SERVER, outputFormat, outputOption, printAs, type ServerFlags } from './server-client.ts';

export function register(program: Command): void {
  program
    .command('get')
    .description('Print one value: through the local agent (default), or from the server with --server.')
    .argument('<item>', 'namespace/name, e.g. production/ml-service/db-password')
    .addOption(new Option('--socket <path>', 'agent socket (default: /run/config-sidecar/agent.sock)').env('CONFIG_SIDECAR_SOCKET'))
    .addOption(new Option('--server [url]', `read from the control plane REST API instead of the agent (URL default: CONFIG_SIDECAR_SERVER, the \`login\` server, ${DEFAULT_SERVER})`))
    .addOption(new Option('--token-file <file>', 'bearer token for --server (or set CONFIG_SIDECAR_TOKEN; default: the token `login` stored)').env(envNameFor('--token-file')))
    .addOption(new Option('--env <name>', 'environment for --server reads (the agent serves its own --env, by default the same)').env(envNameFor('--env')).default(DEFAULT_ENV))
    .addOption(outputOption())
    .addOption(new Option('--json', 'same as -o json: the whole item (identity, version, revision, value)'))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar get production/ml-service/db-password
  $ CONFIG_SIDECAR_SOCKET=.config-sidecar/run/agent.sock config-sidecar get production/ml-service/settings --json
  $ CONFIG_SIDECAR_TOKEN=... config-sidecar get production/ml-service/settings --server http://127.0.0.1:8420 --env staging
  $ config-sidecar login && config-sidecar get production/ml-service/settings --server -o yaml

Exit codes: 0 printed, 1 refused or not found, 2 bad usage, 3 agent or server unreachable.`,
    )
    .action(
      action(async (item: string, flags: ServerFlags & { socket?: string; env: string; json?: boolean; output?: string }) => {
        if (!/^[^/]+(\/[^/]+)+$/.test(item)) throw new CliError(`"${item}" is not namespace/name`, EXIT.usage);
        const printed = flags.server !== undefined ? await fromServer(item, flags) : await fromAgent(item, flags.socket);
        const format = outputFormat(flags);
        if (format !== 'text') {
          await printAs(format, printed.item, () => '');
        } else {
          process.stdout.write(printed.text);
          if (!printed.text.endsWith('\n') && process.stdout.isTTY) process.stdout.write('\n');
        }
      }),
    );
}

interface Printed {
  readonly item: Record<string, unknown>;
  readonly text: string;
}

function render(item: { kind: string; value: unknown; encoding?: string | undefined }): string {
  if (item.kind === 'config') return `${JSON.stringify(item.value, null, 2)}\n`;
  if (item.encoding === 'base64') return Buffer.from(String(item.value), 'base64').toString('latin1');
  return String(item.value);
}

async function fromAgent(item: string, socketPath: string | undefined): Promise<Printed> {
  const { createClient, ConfigSidecarError } = await import('../client/index.ts');
  const client = createClient(socketPath ? { socketPath } : {});
  try {
    const got = await client.get(item);
    if (got.staleSeconds > 0) process.stderr.write(`config-sidecar: warning: the agent cannot reach the server; this value may be ${got.staleSeconds}s stale\n`);
    return { item: { ...got }, text: render(got) };
  } catch (err) {
    if (err instanceof ConfigSidecarError) {
      throw new CliError(`${err.message} (${err.code})`, err.status === 0 ? EXIT.unreachable : err.status === 400 ? EXIT.usage : EXIT.failed);
    }
    throw err;
  } finally {
    await client.close();
  }
}

async function fromServer(item: string, flags: ServerFlags & { env: string }): Promise<Printed> {
  const path = `/v1/items/${item.split('/').map(encodeURIComponent).join('/')}?env=${encodeURIComponent(flags.env)}`;
  const body = await call(flags, 'GET', path);
  return { item: body, text: render(body as { kind: string; value: unknown; encoding?: string }) };
}
