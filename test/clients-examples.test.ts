/**
 * The other-language examples of docs/CLIENTS.md, run exactly as written
 * against a real server and agent: the Python one (standard library only)
 * reads a value and follows /v1/watch; the Go one where a Go toolchain is
 * installed (skipped, saying so, elsewhere).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { putItem, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { within } from './helpers/files-wait.ts';

const DOC = readFileSync(new URL('../docs/CLIENTS.md', import.meta.url), 'utf8');

let server: ServerProcess;
let agent: AgentProcess;
let dir: string;

/** The one fenced block of `language` that is a program (the first one). */
function codeBlock(language: string): string {
  const match = new RegExp('```' + language + '\\n([\\s\\S]*?)\\n```').exec(DOC);
  assert.ok(match, `docs/CLIENTS.md has a ${language} block`);
  return `${match[1]}\n`;
}

function which(command: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/langs/settings', { kind: 'config', value: { db: { host: 'db-1' }, rps: 5 } });
  agent = await startAgentProcess(server, { prefixes: ['production/langs'] });
  dir = await makeTempDir('cs-clients-');
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  await removeDir(agent?.dir ?? '');
  await removeDir(server?.dataDir ?? '');
  await removeDir(dir ?? '');
});

/** Runs `command args` until a stdout line matches; resolves with that line and kills the process. */
function firstLine(command: string, args: readonly string[], env: NodeJS.ProcessEnv, predicate: (line: string) => boolean, cwd = dir): Promise<string> {
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const found = new Promise<string>((resolve, reject) => {
    let buffer = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      const hit = lines.find(predicate);
      if (hit !== undefined) resolve(hit);
    });
    child.once('exit', (code) => reject(new Error(`${command} exited (${code}) first; stderr: ${stderr}`)));
  });
  return within(found, `${command} output`, 60_000).finally(() => child.kill('SIGKILL'));
}

test('the Python example reads a value and resumes the watch stream after a revision', async (t) => {
  const shim = which('python3');
  if (!shim) {
    t.skip('no python3 on this machine');
    return;
  }
  // The interpreter itself, not a version manager's shim (pyenv's costs a second per start).
  const python = execFileSync(shim, ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
  const script = join(dir, 'agent_client.py');
  writeFileSync(script, codeBlock('python'));
  const env = { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_SOCKET: agent.socketPath };
  const got = execFileSync(python, [script, 'get', 'production/langs/settings'], { env, encoding: 'utf8' });
  assert.deepEqual(JSON.parse(got), { db: { host: 'db-1' }, rps: 5 });
  const missing = (() => {
    try {
      execFileSync(python, [script, 'get', 'production/langs/missing'], { env, encoding: 'utf8', stdio: 'pipe' });
      return '';
    } catch (err) {
      return (err as { stderr: string }).stderr;
    }
  })();
  assert.match(missing, /AgentError: .*\(not_found, HTTP 404\)/);

  const { revision } = await putItem(server, 'production/langs/settings', { kind: 'config', value: { db: { host: 'db-2' }, rps: 6 } });
  const line = await firstLine(python, [script, 'watch', 'production/langs', String(revision - 1)], env, (l) => l.startsWith('changed'));
  assert.equal(line, `changed ${revision} settings`);
});

test('the Go example reads a value and prints watch events', async (t) => {
  const go = which('go');
  if (!go) {
    t.skip('no Go toolchain (go) on this machine; the example is shown in docs/CLIENTS.md and tested where one is installed');
    return;
  }
  const project = join(dir, 'go-example');
  execFileSync('mkdir', ['-p', project]);
  writeFileSync(join(project, 'main.go'), codeBlock('go'));
  writeFileSync(join(project, 'go.mod'), 'module example.com/agentclient\n\ngo 1.18\n');
  const env = { PATH: process.env.PATH ?? '', HOME: dir, GOFLAGS: '-mod=mod', GOCACHE: join(dir, 'gocache'), GOPATH: join(dir, 'gopath'), CONFIG_SIDECAR_SOCKET: agent.socketPath };
  const { revision } = await putItem(server, 'production/langs/settings', { kind: 'config', value: { db: { host: 'db-go' }, rps: 7 } });
  const lines: string[] = [];
  const line = await firstLine(go, ['run', '.', 'production/langs/settings', String(revision - 1)], env, (l) => (lines.push(l), l.startsWith('changed')), project);
  assert.deepEqual(JSON.parse(lines[0] ?? ''), { db: { host: 'db-go' }, rps: 7 }, 'the value first');
  assert.match(line, new RegExp(`^changed ${revision} \\{.*"name":"settings"`));
});
