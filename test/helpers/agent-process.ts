/**
 * Test helpers for the agent: start the real `config-sidecar agent` process
 * (test hooks on, ports from the OS, socket in a temp dir) against a real
 * server process, talk to it over its real Unix socket and TCP listener, read
 * its SSE stream, and drive its debug routes (clock, fetch hold).
 */
import type { ChildProcess } from 'node:child_process';
import { chown, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { http, makeTempDir, type LogLine, type ServerProcess } from './server-process.ts';
import { LOG_WAIT_TIMEOUT_MS, spawnCli, waitForStart } from './process.ts';
import { DEFAULT_POD, makePodDir, makeVolume, podSupport, type PodSecurity } from './pod-harness.ts';

export interface AgentProcess {
  readonly proc: ChildProcess;
  /** The pod it runs in (uid 65532, kubelet-made volumes), or undefined when it runs as the test's own user. */
  readonly pod: PodSecurity | undefined;
  readonly dir: string;
  readonly socketPath: string;
  readonly tokenPath: string;
  readonly httpUrl: string;
  readonly adminUrl: string;
  readonly logs: LogLine[];
  readonly output: () => string;
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  readonly exited: Promise<number | null>;
}

export interface StartAgentOptions {
  readonly prefixes?: readonly string[];
  readonly prefetch?: readonly string[];
  readonly args?: readonly string[];
  readonly dir?: string;
  readonly env?: Record<string, string>;
  /** Token sent upstream; default the server's root token. */
  readonly upstreamToken?: string;
  /**
   * The pod to run in (test/helpers/pod-harness.ts): the agent as its uid with no capabilities,
   * the socket directory a kubelet-made volume. Default: DEFAULT_POD where the harness works
   * (root), else the test's own user; `false` runs as the test's user (where root is the point).
   */
  readonly pod?: PodSecurity | false;
}

/** The pod tests run the agent in by default: DEFAULT_POD where the harness works, else none. */
export function defaultPod(): PodSecurity | undefined {
  return podSupport().ok ? DEFAULT_POD : undefined;
}

/** A directory for an agent's files: a pod's file system when running in one (traversable, volumes inside). */
export function makeAgentDir(pod: PodSecurity | undefined, prefix = 'cs-agent-'): Promise<string> {
  return pod ? makePodDir(prefix) : makeTempDir(prefix);
}

export async function startAgentProcess(server: Pick<ServerProcess, 'httpUrl' | 'grpcAddress' | 'rootToken'>, options: StartAgentOptions = {}): Promise<AgentProcess> {
  const pod = options.pod === false ? undefined : (options.pod ?? defaultPod());
  const dir = options.dir ?? (await makeAgentDir(pod));
  const tokenFile = join(dir, 'upstream-token');
  await writeFile(tokenFile, options.upstreamToken ?? server.rootToken, { mode: pod ? 0o440 : 0o600 });
  // A projected service-account token in a pod with an fsGroup: root:fsGroup, group-readable.
  if (pod) await chown(tokenFile, 0, pod.fsGroup);
  const socketPath = join(dir, 'run', 'agent.sock');
  if (pod) await makeVolume(join(dir, 'run'), pod.fsGroup);
  const args = [
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
    ...(options.prefixes ?? ['production']).flatMap((p) => ['--prefix', p]),
    ...(options.prefetch ?? []).flatMap((p) => ['--prefetch', p]),
    // The machine's own cgroup limit must not change the caps a test counts on (429 after 256 streams);
    // test/agent-memory.test.ts passes --memory-limit itself.
    ...(options.args?.includes('--memory-limit') ? [] : ['--memory-limit', 'none']),
    ...(options.args ?? []),
  ];
  // spawnCli SIGKILLs every child still running when the test process exits or is signalled.
  const child = spawnCli('agent', args, { CONFIG_SIDECAR_TEST_HOOKS: '1', ...options.env }, pod ? { as: pod.agent } : {});
  // An agent that never gets listening is killed before the error reaches the caller.
  const listening = await waitForStart(child, (l) => l.msg === 'agent listening');
  return {
    proc: child.proc,
    pod,
    dir,
    socketPath,
    tokenPath: listening.tokenFile as string,
    httpUrl: listening.http as string,
    adminUrl: listening.admin as string,
    logs: child.logs,
    output: child.output,
    waitForLog: child.waitForLog,
    exited: child.exited,
    stop: child.stop,
  };
}

export interface SocketResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  readonly json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** A GET over the agent's Unix socket. */
export function socketGet(socketPath: string, path: string, headers: Record<string, string> = {}): Promise<SocketResult> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        let json: unknown;
        try {
          json = body.length ? JSON.parse(body.toString()) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Waits for the agent's /readyz to answer `status` (polling the admin listener, which is what a kubelet does). */
export async function waitReady(adminUrl: string, status = 200, timeoutMs = LOG_WAIT_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await http(adminUrl, 'GET', '/readyz');
    if (res.status === status) return;
    if (Date.now() > deadline) throw new Error(`/readyz stayed ${res.status}: ${res.text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Calls a test-hook route on the agent's admin listener. */
export async function hook(adminUrl: string, method: 'GET' | 'POST', path: string): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await http(adminUrl, method, path);
  if (res.status !== 200) throw new Error(`${method} ${path} → ${res.status} ${res.text}`);
  return res.json;
}

export interface SseEvent {
  readonly event: string;
  readonly id: string;
  readonly data: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface SseReader {
  next(timeoutMs?: number): Promise<SseEvent>;
  /** Resolves once the stream's opening comment arrived (the subscription exists). */
  readonly opened: Promise<void>;
  close(): void;
}

/** Opens `/v1/watch` over the socket and parses events. */
export function openSse(socketPath: string, path: string, headers: Record<string, string> = {}): SseReader {
  const queue: SseEvent[] = [];
  const waiters: Array<(e: SseEvent) => void> = [];
  let opened!: () => void;
  const openedP = new Promise<void>((r) => (opened = r));
  let buffer = '';
  const req = httpRequest({ socketPath, path, method: 'GET', headers }, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (block.startsWith(':') || block.startsWith('retry:')) {
          opened();
          continue;
        }
        const fields: Record<string, string> = {};
        for (const line of block.split('\n')) {
          const i = line.indexOf(':');
          fields[line.slice(0, i)] = line.slice(i + 1).trimStart();
        }
        const event = { event: fields.event ?? 'message', id: fields.id ?? '', data: JSON.parse(fields.data ?? 'null') };
        const w = waiters.shift();
        if (w) w(event);
        else queue.push(event);
      }
    });
  });
  req.on('error', () => {});
  req.end();
  return {
    opened: openedP,
    next(timeoutMs = 15_000) {
      const e = queue.shift();
      if (e) return Promise.resolve(e);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no SSE event in time')), timeoutMs);
        waiters.push((ev) => {
          clearTimeout(timer);
          resolve(ev);
        });
      });
    },
    close() {
      req.destroy();
    },
  };
}

/** PUT a value through the server's REST API with its root token. */
export async function putItem(server: Pick<ServerProcess, 'httpUrl' | 'rootToken'>, path: string, body: unknown, env = 'base'): Promise<{ version: number; revision: number }> {
  const res = await http(server.httpUrl, 'PUT', `/v1/items/${path}?env=${env}`, { token: server.rootToken, body });
  if (res.status !== 200 && res.status !== 201) throw new Error(`PUT ${path} → ${res.status} ${res.text}`);
  return res.json as { version: number; revision: number };
}
