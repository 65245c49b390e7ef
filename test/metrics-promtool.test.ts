/**
 * `/metrics` of the server and the agent, as served, passes Prometheus's own
 * linter (`promtool check metrics`, from Debian's `prometheus` package, which
 * .ci/run installs). Skipped, saying so, where promtool is missing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';

const promtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = promtool ? false : 'promtool is not installed (Debian: apt-get install prometheus; .ci/run does)';

let server: ServerProcess | undefined;
let agent: AgentProcess | undefined;

before(async () => {
  if (!promtool) return;
  server = await startServerProcess();
  await http(server.httpUrl, 'PUT', '/v1/items/production/ml/db', { token: server.rootToken, body: { kind: 'secret', value: 'x' } });
  agent = await startAgentProcess(server, { prefetch: ['production/ml/db'] });
});
after(async () => {
  await agent?.stop('SIGKILL');
  await server?.stop('SIGKILL');
  if (server) await removeDir(server.dataDir);
});

function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

test('the server’s /metrics passes promtool check metrics as served', { skip }, async () => {
  const metrics = await http(server!.adminUrl, 'GET', '/metrics');
  assert.equal(metrics.status, 200);
  const result = await promtoolCheck(metrics.text);
  assert.equal(result.output, '', 'no lint findings');
  assert.equal(result.code, 0);
});

test('the agent’s /metrics passes promtool check metrics as served', { skip }, async () => {
  const metrics = await http(agent!.adminUrl, 'GET', '/metrics');
  assert.equal(metrics.status, 200);
  const result = await promtoolCheck(metrics.text);
  assert.equal(result.output, '', 'no lint findings');
  assert.equal(result.code, 0);
});
