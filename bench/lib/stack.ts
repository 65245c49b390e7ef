/**
 * The product under test: a real `config-sidecar server` (embedded SQLite, a
 * temp data dir, ports from the OS, rate limit off) and real
 * `config-sidecar agent` processes on a Unix socket and 127.0.0.1, spawned
 * from the repo's CLI on Node 24 and pinned with taskset.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool, request } from 'undici';
import { startChild, type Child } from './proc.ts';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** The compiled bin (`npm run build`): what a pod runs, for the footprint tools. */
export const DIST_CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** Concurrent PUTs while seeding (the server serialises writes in SQLite anyway). */
const SEED_CONCURRENCY = 8;

export interface ServerHandle {
  readonly child: Child;
  readonly dataDir: string;
  readonly httpUrl: string;
  readonly grpcAddress: string;
  readonly adminUrl: string;
  readonly rootToken: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A loopback port free a moment ago, for a process that must be told its port before it starts. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** RAM-backed (tmpfs) when available: seeding 100k items is then bound by the server, not by fsync. */
export async function ramDir(prefix: string): Promise<string> {
  return existsSync(SHM) ? mkdtemp(join(SHM, prefix)) : tempDir(prefix);
}
const SHM = '/dev/shm';

export async function startServer(
  core: number | undefined,
  extraArgs: readonly string[] = [],
  dataDir?: string,
  secrets?: { kek: string; rootToken: string },
  /** Node flags in front of the CLI (e.g. --heapsnapshot-signal). */
  nodeArgs: readonly string[] = [],
): Promise<ServerHandle> {
  const dir = dataDir ?? (await ramDir('csb-server-'));
  const kek = secrets?.kek ?? randomBytes(32).toString('base64');
  const rootToken = secrets?.rootToken ?? `bench-${randomBytes(16).toString('hex')}`;
  const child = startChild(
    'server',
    process.execPath,
    [...nodeArgs, CLI, 'server', '--data-dir', dir, '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--rate-limit', '0', ...extraArgs],
    { core, env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: kek, CONFIG_SIDECAR_ROOT_TOKEN: rootToken } },
  );
  const line = await child.waitForLine((l) => l.includes('"server listening"'));
  const info = JSON.parse(line) as { http: string; grpc: string; admin: string };
  return {
    child,
    dataDir: dir,
    httpUrl: info.http,
    grpcAddress: info.grpc,
    adminUrl: info.admin,
    rootToken,
    async stop(signal) {
      await child.stop(signal);
      if (!dataDir) await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface PutResult {
  readonly version: number;
  readonly revision: number;
}

export class ServerClient {
  private readonly pool: Pool;
  private readonly token: string;
  constructor(server: Pick<ServerHandle, 'httpUrl' | 'rootToken'>) {
    // Idle connections are dropped well before the server's keep-alive timeout would close them under us.
    this.pool = new Pool(server.httpUrl, { connections: SEED_CONCURRENCY, pipelining: 1, keepAliveTimeout: 1_000, keepAliveMaxTimeout: 1_000 });
    this.token = server.rootToken;
  }

  async put(path: string, value: string, kind: 'secret' | 'config' = 'secret'): Promise<PutResult> {
    try {
      return await this.putOnce(path, value, kind);
    } catch (err) {
      // A keep-alive connection the server closed as we reused it: the request never reached it, so once more.
      if ((err as { code?: string }).code !== 'UND_ERR_SOCKET') throw err;
      return this.putOnce(path, value, kind);
    }
  }

  private async putOnce(path: string, value: string, kind: 'secret' | 'config'): Promise<PutResult> {
    const res = await this.pool.request({
      method: 'PUT',
      path: `/v1/items/${path}?env=base`,
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind, value }),
    });
    const text = await res.body.text();
    if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`PUT ${path} → ${res.statusCode} ${text}`);
    return JSON.parse(text) as PutResult;
  }

  /**
   * Writes several secrets as one change set (`POST /v1/changes`, at most
   * CHANGE_SET_MAX_CHANGES): one request and one transaction instead of one
   * per item, which is what makes seeding 100k items take seconds, not minutes.
   */
  async putBatch(items: ReadonlyArray<{ path: string; value: string }>): Promise<{ revision: number }> {
    const body = JSON.stringify({ changes: items.map((i) => ({ item: i.path, env: 'base', kind: 'secret', value: i.value })) });
    const send = async (): Promise<{ revision: number }> => {
      const res = await this.pool.request({ method: 'POST', path: '/v1/changes', headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' }, body });
      const text = await res.body.text();
      if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`POST /v1/changes (${items.length} items from ${items[0]?.path ?? '?'}) → ${res.statusCode} ${text.slice(0, 300)}`);
      return JSON.parse(text) as { revision: number };
    };
    try {
      return await send();
    } catch (err) {
      // As in put: a reused keep-alive connection the server had closed; the request never reached it.
      if ((err as { code?: string }).code !== 'UND_ERR_SOCKET') throw err;
      return send();
    }
  }

  async rotate(namespace: string): Promise<{ revision: number; keyVersion: number }> {
    const res = await this.pool.request({ method: 'POST', path: `/v1/rotate/${namespace}`, headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' }, body: '{}' });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`rotate ${namespace} → ${res.statusCode} ${text}`);
    return JSON.parse(text) as { revision: number; keyVersion: number };
  }

  /** Writes `count` items `<namespace>/k<i>` with 1 KiB values, `concurrency` at a time. */
  async seed(namespace: string, count: number, valueBytes: number, deadlineMs: number): Promise<void> {
    let next = 0;
    const until = Date.now() + deadlineMs;
    const worker = async (): Promise<void> => {
      while (next < count) {
        if (Date.now() > until) throw new Error(`seeding ${count} items did not finish within ${deadlineMs} ms`);
        const i = next++;
        await this.put(`${namespace}/${keyName(i)}`, valueFor(i, 0, valueBytes));
      }
    };
    await Promise.all(Array.from({ length: SEED_CONCURRENCY }, worker));
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export function keyName(i: number): string {
  return `k${String(i).padStart(6, '0')}`;
}

/** A printable value of exactly `bytes` bytes that names its key and generation (so a reader can tell versions apart). */
export function valueFor(i: number, generation: number, bytes: number): string {
  const head = `k${i}-g${generation}-`;
  return head + 'x'.repeat(Math.max(0, bytes - head.length));
}

export interface AgentHandle {
  readonly child: Child;
  readonly dir: string;
  readonly socketPath: string;
  readonly httpUrl: string;
  readonly adminUrl: string;
  readonly podToken: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface AgentOptions {
  readonly core?: number | undefined;
  readonly prefixes: readonly string[];
  readonly prefetch?: readonly string[];
  readonly args?: readonly string[];
  readonly nodeArgs?: readonly string[];
  readonly configYaml?: string;
  readonly dir?: string;
  /** The CLI entry to run (default: the TypeScript source). */
  readonly cli?: string;
  /** Extra environment (the agent otherwise gets PATH only). */
  readonly env?: Readonly<Record<string, string>>;
  /** A command that execs its trailing arguments (e.g. a shell joining a cgroup first); the PID stays the agent's. */
  readonly wrap?: readonly string[];
  /** Sees every chunk of the agent's stdout and stderr. */
  readonly onOutput?: (chunk: string) => void;
}

export async function startAgent(server: Pick<ServerHandle, 'httpUrl' | 'grpcAddress' | 'rootToken'>, options: AgentOptions): Promise<AgentHandle> {
  const dir = options.dir ?? (await tempDir('csb-agent-'));
  const tokenFile = join(dir, 'upstream-token');
  await writeFile(tokenFile, server.rootToken, { mode: 0o600 });
  const socketPath = join(dir, 'run', 'agent.sock');
  const configArgs: string[] = [];
  if (options.configYaml !== undefined) {
    const configPath = join(dir, 'agent.yaml');
    await writeFile(configPath, options.configYaml);
    configArgs.push('--config', configPath);
  }
  const [command, ...prefix] = options.wrap?.length ? [...options.wrap, process.execPath] : [process.execPath];
  const child = startChild(
    'agent',
    command as string,
    [
      ...prefix,
      // No flags of our own: the bin re-executes itself with its runtime settings (src/cli/runtime-settings.ts), as in the image.
      ...(options.nodeArgs ?? []),
      options.cli ?? CLI,
      'agent',
      '--server',
      server.httpUrl,
      '--server-grpc',
      server.grpcAddress,
      '--token-file',
      tokenFile,
      '--socket',
      socketPath,
      '--http-listen',
      '127.0.0.1:0',
      '--admin-listen',
      '127.0.0.1:0',
      ...options.prefixes.flatMap((p) => ['--prefix', p]),
      ...(options.prefetch ?? []).flatMap((p) => ['--prefetch', p]),
      ...configArgs,
      ...(options.args ?? []),
    ],
    { core: options.core, env: { PATH: process.env.PATH ?? '', ...options.env }, cwd: dir, onOutput: options.onOutput },
  );
  const line = await child.waitForLine((l) => l.includes('"agent listening"'));
  const info = JSON.parse(line) as { http: string; admin: string; tokenFile: string };
  const podToken = (await readFile(info.tokenFile, 'utf8')).trim();
  return {
    child,
    dir,
    socketPath,
    httpUrl: info.http,
    adminUrl: info.admin,
    podToken,
    async stop(signal) {
      await child.stop(signal);
      if (!options.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Polls /readyz until 200 (bounded). */
export async function waitReady(adminUrl: string, timeoutMs = 30_000, pollMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await request(`${adminUrl}/readyz`);
      await res.body.dump();
      if (res.statusCode === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`/readyz not 200 within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Reads a counter/gauge (summing label sets) from a Prometheus /metrics text. */
export async function metric(adminUrl: string, name: string): Promise<number> {
  const res = await request(`${adminUrl}/metrics`);
  const text = await res.body.text();
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      found = true;
    }
  }
  return found ? sum : Number.NaN;
}
