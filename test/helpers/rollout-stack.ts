/**
 * What the rollout tests share: a real server with the stable value written,
 * its REST API and CLI as an operator uses them, what each agent serves, an
 * application's health post, and waiting on a condition with a deadline.
 */
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import type { AgentProcess } from './agent-process.ts';
import { socketGet } from './agent-process.ts';
import { CLI, http, removeDir, startServerProcess, type HttpResult, type ServerProcess } from './server-process.ts';

export const WAIT_MS = 15_000;

/** Polls `probe` until it returns a value; the rollout state lives in other processes, so there is no event to wait on. */
export async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs cleanup steps after the file's tests, last registered first; a failing step does not stop the others. */
export function cleanupStack(): (step: () => Promise<unknown>) => void {
  const steps: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const step of steps.reverse()) await step().catch(() => undefined);
  });
  return (step) => void steps.push(step);
}

export type RestTarget = Pick<ServerProcess, 'httpUrl' | 'rootToken'>;
export type RestApi = (method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown) => Promise<HttpResult>;

/** The server's REST API with the root token; a getter follows a server the test restarts. */
export function restApi(target: RestTarget | (() => RestTarget)): RestApi {
  return (method, path, body) => {
    const server = typeof target === 'function' ? target() : target;
    return http(server.httpUrl, method, path, { token: server.rootToken, ...(body === undefined ? {} : { body }) });
  };
}

/** Starts a server (rate limit off) removed with its data after the file's tests, and writes `stable` to `item`. */
export async function startRolloutServer(cleanup: (step: () => Promise<unknown>) => void, item: string, stable: unknown): Promise<{ server: ServerProcess; api: RestApi }> {
  const server = await startServerProcess({ args: ['--rate-limit', '0'] });
  cleanup(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
  });
  const api = restApi(server);
  assert.equal((await api('PUT', `/v1/items/${item}`, { kind: 'config', value: stable })).status, 200);
  return { server, api };
}

/** Runs the CLI against `target` with only PATH and the server settings in its environment. */
export function runCli(target: RestTarget, args: readonly string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const env = { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_TOKEN: target.rootToken, CONFIG_SIDECAR_SERVER: target.httpUrl };
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, output }));
  });
}

/** Posts the application's health to the agent's socket, as the app in the pod would. */
export function postHealth(agent: Pick<AgentProcess, 'socketPath'>, body: unknown): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: agent.socketPath, path: '/v1/health', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** What each agent serves for `item` (by agent id), `HTTP <status>` where it does not. */
export async function servedValues(agents: ReadonlyMap<string, AgentProcess>, item: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [id, agent] of agents) {
    const res = await socketGet(agent.socketPath, `/v1/items/${item}`);
    out[id] = res.status === 200 ? res.json.value : `HTTP ${res.status}`;
  }
  return out;
}

/** Waits until every agent serves for `item` what `expected` says (by agent id). */
export function servedBecomes(agents: ReadonlyMap<string, AgentProcess>, item: string, what: string, expected: (id: string) => unknown): Promise<Record<string, unknown>> {
  return until(what, async () => {
    const now = await servedValues(agents, item);
    return [...agents.keys()].every((id) => now[id] === expected(id)) ? now : undefined;
  });
}
