/**
 * `config-sidecar get <namespace/name>`: reads one value through the local
 * agent's socket (what an application sees), or with `--server` straight
 * from the control plane's REST API (an operator's view; needs a token).
 * Only the flag switches to the server: CONFIG_SIDECAR_SERVER, exported for
 * `put` and friends, gives the URL for `--server` but never changes where a
 * plain `get` reads. Both read DEFAULT_ENV unless told otherwise, like `put`.
 * `--ring` reads the item's key ring instead (current + previous versions
 * within their grace); through the agent also as `--format jwks|pem-bundle`,
 * the bytes a ring-format file would hold.
 */
import { Option, type Command } from 'commander';
import { DEFAULT_ENV } from '../shared/protocol-constants.ts';
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
    .addOption(new Option('--ring', "the item's key ring: the current version and the previous ones still within their grace (items written with --ring-grace)"))
    .addOption(new Option('--format <format>', 'with --ring, through the agent: jwks (public JSON Web Key Set) or pem-bundle (the certificates, current first)').choices(RING_DOCUMENTS))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar get production/ml-service/db-password
  $ CONFIG_SIDECAR_SOCKET=.config-sidecar/run/agent.sock config-sidecar get production/ml-service/settings --json
  $ CONFIG_SIDECAR_TOKEN=... config-sidecar get production/ml-service/settings --server http://127.0.0.1:8420 --env staging
  $ config-sidecar login && config-sidecar get production/ml-service/settings --server -o yaml
  $ config-sidecar get production/auth/signing-key --ring                  # current + previous versions, as JSON
  $ config-sidecar get production/auth/signing-key --ring --format jwks > jwks.json
  $ config-sidecar get production/tls/ca --ring --format pem-bundle > ca-bundle.pem

Exit codes: 0 printed, 1 refused or not found, 2 bad usage, 3 agent or server unreachable.`,
    )
    .action(
      action(async (item: string, flags: GetFlags) => {
        if (!/^[^/]+(\/[^/]+)+$/.test(item)) throw new CliError(`"${item}" is not namespace/name`, EXIT.usage);
        const format = outputFormat(flags);
        if (flags.format !== undefined && !flags.ring) throw new CliError('--format renders a key ring: add --ring (a single value prints as is)', EXIT.usage);
        if (flags.format !== undefined && flags.server !== undefined) {
          throw new CliError(`--format ${flags.format} is rendered by the agent; the server answers a ring as JSON: drop --server or --format`, EXIT.usage);
        }
        if (flags.format === 'pem-bundle' && format !== 'text') throw new CliError('--format pem-bundle prints PEM text: drop -o/--json', EXIT.usage);
        const printed = flags.server !== undefined ? await fromServer(item, flags) : await fromAgent(item, flags);
        if (format !== 'text') {
          await printAs(format, printed.item, () => '');
        } else {
          process.stdout.write(printed.text);
          if (!printed.text.endsWith('\n') && process.stdout.isTTY) process.stdout.write('\n');
        }
      }),
    );
}

const RING_DOCUMENTS = ['jwks', 'pem-bundle'] as const;

interface GetFlags extends ServerFlags {
  socket?: string;
  env: string;
  json?: boolean;
  output?: string;
  ring?: boolean;
  format?: (typeof RING_DOCUMENTS)[number];
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

function warnStale(staleSeconds: number, what: string): void {
  if (staleSeconds > 0) process.stderr.write(`config-sidecar: warning: the agent cannot reach the server; this ${what} may be ${staleSeconds}s stale\n`);
}

async function fromAgent(item: string, flags: GetFlags): Promise<Printed> {
  const { createClient, ConfigSidecarError } = await import('../client/index.ts');
  const client = createClient(flags.socket ? { socketPath: flags.socket } : {});
  try {
    if (flags.ring && flags.format === 'jwks') {
      const ring = await client.getRing(item, { format: 'jwks' });
      warnStale(ring.staleSeconds, 'key ring');
      return { item: { ...ring.document }, text: `${JSON.stringify(ring.document, null, 2)}\n` };
    }
    if (flags.ring && flags.format === 'pem-bundle') {
      const ring = await client.getRing(item, { format: 'pem-bundle' });
      warnStale(ring.staleSeconds, 'key ring');
      return { item: {}, text: ring.document };
    }
    if (flags.ring) {
      const ring = await client.getRing(item);
      warnStale(ring.staleSeconds, 'key ring');
      return { item: { ...ring }, text: `${JSON.stringify(ring, null, 2)}\n` };
    }
    const got = await client.get(item);
    warnStale(got.staleSeconds, 'value');
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

async function fromServer(item: string, flags: GetFlags): Promise<Printed> {
  const path = `/v1/items/${item.split('/').map(encodeURIComponent).join('/')}?env=${encodeURIComponent(flags.env)}${flags.ring ? '&ring=1' : ''}`;
  const body = await call(flags, 'GET', path);
  if (flags.ring) return { item: body, text: `${JSON.stringify(body, null, 2)}\n` };
  return { item: body, text: render(body as { kind: string; value: unknown; encoding?: string }) };
}
