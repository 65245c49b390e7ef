/**
 * An agent the server refuses says why, in the server's words, where an
 * operator looks: `/readyz` and `config-sidecar doctor` (a wrong token, and a
 * token too narrow for the agent's prefixes), instead of "not yet connected".
 * A server with no credentials configured warns at start.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { http, makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { runCli } from './helpers/process.ts';

const NARROW_TOKEN = 'narrow-reader-token-0123456789abcdef';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

let server: ServerProcess;
let dir: string;
const agents: AgentProcess[] = [];

before(async () => {
  dir = await makeTempDir('cs-refusal-');
  const authFile = join(dir, 'auth.yaml');
  await writeFile(
    authFile,
    `version: 1
subjects:
  - name: narrow
    tokens:
      - sha256: ${sha(NARROW_TOKEN)}
roles:
  - name: staging-only
    rules:
      - prefixes: [staging]
        actions: [read, list]
bindings:
  - role: staging-only
    subjects: [narrow]
`,
  );
  server = await startServerProcess({ args: ['--auth-file', authFile] });
});
after(async () => {
  for (const agent of agents) await agent.stop('SIGKILL');
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

async function refusedAgent(upstreamToken: string): Promise<AgentProcess> {
  const agent = await startAgentProcess(server, { upstreamToken, prefixes: ['production'] });
  agents.push(agent);
  await agent.waitForLog((l) => l.msg === 'watch stream failed');
  return agent;
}

async function streamCheck(agent: AgentProcess): Promise<string> {
  const res = await http(agent.adminUrl, 'GET', '/readyz');
  assert.equal(res.status, 503);
  return String(res.json.checks.stream.detail);
}

test('a wrong token: /readyz and doctor carry the server’s refusal and what to check', async () => {
  const agent = await refusedAgent('wrong-token-0123456789abcdef');
  const detail = await streamCheck(agent);
  assert.match(detail, /the server refused the agent's token: .+ \(check --token-file/);
  const doctor = await runCli(['doctor', '--socket', agent.socketPath, '--admin-url', agent.adminUrl]);
  assert.equal(doctor.code, 1);
  assert.match(doctor.stdout, /FAIL {2}agent ready .*the server refused the agent's token/);
});

test('a token too narrow for the prefixes: /readyz names the refused prefix', async () => {
  const agent = await refusedAgent(NARROW_TOKEN);
  const detail = await streamCheck(agent);
  assert.match(detail, /the server refused the prefixes for this token: .*production/);
  assert.match(detail, /role bindings/);
});

test('a server with no root token, auth file or JWT issuer warns that every call will be refused', async () => {
  const bare = await startServerProcess({ env: { CONFIG_SIDECAR_ROOT_TOKEN: '' } });
  try {
    const warning = await bare.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('no credentials configured'));
    assert.equal(warning.level, 'warn');
    assert.match(String(warning.msg), /CONFIG_SIDECAR_ROOT_TOKEN .*--auth-file/);
  } finally {
    await bare.stop('SIGKILL');
    await removeDir(bare.dataDir);
  }
  assert.equal(server.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('no credentials configured')), false, 'no warning with credentials');
});
