/**
 * `config-sidecar dev` (what `npm start` runs): the control plane on the
 * embedded SQLite store in `.config-sidecar/`, seeded with sample data on first
 * start, and an agent on a local socket, both in this process. Prints what to
 * paste (socket, curl lines, the TCP URL with its token, a rotate command);
 * Ctrl-C stops both cleanly. This module is the composition root that may
 * import both `src/server` and `src/agent`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import type { ControlPlane } from '../server/control-plane.ts';
import type { ServerHandle } from '../server/main.ts';
import type { RunningAgent } from '../agent/agent.ts';
import { action } from './cli-util.ts';

export const DEFAULT_DEV_DIR = '.config-sidecar';
/**
 * The store lives where `server`, `backup` and `rotate --kek` look by default
 * (their --data-dir is .config-sidecar/server), so `backup --to F` in the same
 * directory backs up the dev stack instead of an empty store.
 */
const DEV_STORE_SUBDIR = 'server';
/** Where earlier builds kept the dev store; moved once to DEV_STORE_SUBDIR. */
const OLD_DEV_STORE_SUBDIR = 'data';

/** Sample items the agent prefetches and the printed commands use. */
export const DEV_SECRET = 'production/ml-service/db-password';
export const DEV_CONFIG = 'production/ml-service/settings';
export const DEV_NAMESPACE = 'production/ml-service';
/** Two sample rendered files (docs/FILES.md): one item feeds both, so a change shows in both at once. */
export const DEV_FILES = [
  { path: 'ml-service.env', items: [DEV_SECRET, DEV_CONFIG], format: 'env' },
  { path: 'settings.json', items: [DEV_CONFIG, DEV_SECRET], format: 'json' },
];

interface DevFlags {
  dir: string;
  serverHttpListen: string;
  serverGrpcListen: string;
  serverAdminListen: string;
  agentHttpListen: string;
  agentAdminListen: string;
  logLevel: string;
}

function opt(flags: string, description: string, fallback: string): Option {
  const long = /--[a-z-]+/.exec(flags)?.[0] ?? flags;
  return new Option(flags, description).env(envNameFor(`--dev-${long.slice(2)}`)).default(fallback);
}

/** A secret kept in the dev directory so restarts keep the data readable. */
async function devSecret(dir: string, file: string, make: () => string): Promise<string> {
  const path = join(dir, file);
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    const value = make();
    await writeFile(path, `${value}\n`, { mode: 0o600 });
    return value;
  }
}

export function register(program: Command): void {
  program
    .command('dev')
    .description('Run a server and an agent with sample data in .config-sidecar/ (what `npm start` runs); prints commands to try.')
    .addOption(opt('--dir <dir>', 'dev state: SQLite store, keys, socket', DEFAULT_DEV_DIR))
    .addOption(opt('--server-http-listen <host:port>', 'server REST listener', '127.0.0.1:8420'))
    .addOption(opt('--server-grpc-listen <host:port>', 'server gRPC Watch listener', '127.0.0.1:8421'))
    .addOption(opt('--server-admin-listen <host:port>', 'server admin listener', '127.0.0.1:8422'))
    .addOption(opt('--agent-http-listen <host:port>', 'agent TCP listener (pod token required)', '127.0.0.1:8430'))
    .addOption(opt('--agent-admin-listen <host:port>', 'agent /healthz /readyz /metrics', '127.0.0.1:8431'))
    .addOption(opt('--log-level <level>', 'log level of both components (JSON lines on stdout)', 'warn'))
    .addHelpText(
      'after',
      `
Examples:
  $ npm start                                   # same as: config-sidecar dev
  $ config-sidecar dev --dir /tmp/cs-dev --server-http-listen 127.0.0.1:0 --agent-http-listen 127.0.0.1:0
  $ CONFIG_SIDECAR_DEV_LOG_LEVEL=info config-sidecar dev

The KEK and the root token are generated on first start and kept (mode 0600) in the dev directory.`,
    )
    .action(action(async (flags: DevFlags) => runDev(flags)));
}

async function runDev(flags: DevFlags): Promise<void> {
  const dir = resolve(flags.dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const dataDir = join(dir, DEV_STORE_SUBDIR);
  if (!existsSync(dataDir) && existsSync(join(dir, OLD_DEV_STORE_SUBDIR))) await rename(join(dir, OLD_DEV_STORE_SUBDIR), dataDir);
  const kek = await devSecret(dir, 'dev-kek', () => randomBytes(32).toString('base64'));
  const rootToken = await devSecret(dir, 'root-token', () => randomBytes(24).toString('hex'));
  const [{ parseServerSettings }, { startServer }, { resolveAgentSettings }, { startAgent, DRAIN_TIMEOUT_MS }, { exitOnSignals }, { createLogger }, { pino }] =
    await Promise.all([
      import('../server/settings.ts'),
      import('../server/main.ts'),
      import('../agent/agent-settings.ts'),
      import('../agent/agent.ts'),
      import('../shared/shutdown.ts'),
      import('../shared/logger.ts'),
      import('pino'),
    ]);
  const serverSettings = parseServerSettings({
    dataDir,
    httpListen: flags.serverHttpListen,
    grpcListen: flags.serverGrpcListen,
    adminListen: flags.serverAdminListen,
    kek,
    rootToken,
    logLevel: flags.logLevel,
  });
  // One stdout destination for both components, so the exit's log drain (src/shared/shutdown.ts) covers all lines.
  const destination = pino.destination({ dest: 1, sync: false });
  const logger = createLogger({ component: 'dev', level: serverSettings.logLevel, destination });
  let stopping = false;
  const started: { server?: Promise<ServerHandle>; agent?: Promise<RunningAgent> } = {};
  // Installed before anything listens; closes whatever has started, agent first. Once `stopping` is set no
  // further part starts, so the promises read here are all there will be.
  exitOnSignals({
    logger,
    graceMs: DRAIN_TIMEOUT_MS + serverSettings.shutdownGrace,
    close: async () => {
      stopping = true;
      const agent = await started.agent?.catch(() => undefined);
      await agent?.close();
      const server = await started.server?.catch(() => undefined);
      await server?.close();
    },
  });
  started.server = startServer(serverSettings, { logger: createLogger({ component: 'server', level: serverSettings.logLevel, destination }) });
  const server = await started.server;
  if (stopping) return;
  await seed(server.controlPlane);
  if (stopping) return;
  const tokenFile = join(dir, 'root-token');
  const grpcAddress = `${server.grpc.host}:${server.grpc.port}`;
  const agentSettings = resolveAgentSettings({
    server: server.httpUrl,
    serverGrpc: grpcAddress,
    tokenFile,
    prefix: ['production', 'staging'],
    prefetch: [DEV_SECRET, DEV_CONFIG],
    socket: join(dir, 'run', 'agent.sock'),
    httpListen: flags.agentHttpListen,
    adminListen: flags.agentAdminListen,
    logLevel: flags.logLevel,
    filesDir: join(dir, 'files'),
    files: DEV_FILES,
  });
  started.agent = startAgent(agentSettings, { logger: createLogger({ component: 'agent', level: agentSettings.logLevel, destination }) });
  let agent;
  try {
    agent = await started.agent;
  } catch (err) {
    await server.close();
    throw err;
  }
  await agent.ready;
  const tcp = agent.httpAddress ? `http://${agent.httpAddress.host}:${agent.httpAddress.port}` : undefined;
  const admin = `http://${agent.adminAddress.host}:${agent.adminAddress.port}`;
  const serverAdmin = `http://${bracket(server.admin.host)}:${server.admin.port}`;
  // The package's bin, as the README writes it: `npx` finds it in this project (or an installed copy).
  const cli = 'npx config-sidecar';
  const lines = [
    '',
    'config-sidecar dev is running: a server and an agent with sample data. Ctrl-C stops both.',
    '',
    `  server   ${server.httpUrl}  (REST; OpenAPI ${server.httpUrl}/v1/openapi.json)`,
    `  status   ${server.httpUrl}/ui/  (the operator page; it asks for the root token, ${tokenFile})`,
    `  grpc     ${grpcAddress}  (Watch stream)`,
    `  server-admin ${serverAdmin}/readyz  ${serverAdmin}/metrics`,
    `  socket   ${agent.socketPath}`,
    ...(tcp ? [`  tcp      ${tcp}  (token file ${agent.tokenPath})`] : []),
    `  admin    ${admin}/readyz  ${admin}/metrics`,
    `  files    ${agentSettings.filesDir}`,
    `  store    ${dataDir}  (KEK ${join(dir, 'dev-kek')}, root token ${tokenFile})`,
    '',
    'In another terminal, point the CLI at this stack (server, root token, agent socket):',
    `  export CONFIG_SIDECAR_SERVER=${server.httpUrl} CONFIG_SIDECAR_TOKEN="$(cat ${tokenFile})" CONFIG_SIDECAR_SOCKET=${agent.socketPath}`,
    '',
    'Read through the socket:',
    `  curl -s --unix-socket ${agent.socketPath} http://agent/v1/items/${DEV_SECRET}`,
    `  curl -s --unix-socket ${agent.socketPath} http://agent/v1/items/${DEV_CONFIG}`,
    ...(tcp ? ['Read over TCP with the pod token:', `  curl -s -H "X-Config-Sidecar-Token: $(cat ${agent.tokenPath})" ${tcp}/v1/items/${DEV_CONFIG}`] : []),
    'Rendered files (re-rendered on every change, published atomically through ..data):',
    ...DEV_FILES.map((f) => `  cat ${join(dir, 'files', f.path)}`),
    'Watch changes arrive (in another terminal, after the export above):',
    `  ${cli} watch production`,
    'Rotate the namespace key, or write a new secret version, and see the event and the new value:',
    `  ${cli} rotate ${DEV_NAMESPACE}`,
    `  printf %s "rotated-$(date +%s)" | ${cli} put ${DEV_SECRET} --kind secret --file -`,
    `  ${cli} get ${DEV_SECRET}`,
    'List items, and back up the store:',
    `  ${cli} list ${DEV_NAMESPACE}`,
    `  ${cli} backup --to ./config-sidecar-backup.db --data-dir ${dataDir} --kek-file ${join(dir, 'dev-kek')}`,
    '',
  ];
  if (!stopping) process.stdout.write(`${lines.join('\n')}\n`);
}

function bracket(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** Seeds the server engineers' sample set (src/server/sample-data.ts) on an empty store. */
async function seed(controlPlane: ControlPlane): Promise<void> {
  const { seedSampleData } = await import('../server/sample-data.ts');
  await seedSampleData(controlPlane);
}
