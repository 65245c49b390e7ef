/**
 * The `onChange: { http }` reload hook of rendered files, end to end: a real
 * server and agent rendering files, and a real HTTP endpoint on 127.0.0.1
 * standing in for the app's `/-/reload`. One call per publication that
 * changed a file with the hook (two files sharing a hook are one call; the
 * start-up publication is none); a failing hook is retried, counted, and
 * never holds up the files; a non-loopback URL is refused at config load.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultPod, makeAgentDir, startAgentProcess, putItem, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume } from './helpers/pod-harness.ts';
import { http, metricValue, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { spawnCli } from './helpers/process.ts';
import { within } from './helpers/files-wait.ts';
import { parseFileSpecs } from '../src/agent/files/file-spec-schema.ts';
import { SettingError } from '../src/shared/settings.ts';

let server: ServerProcess;
let agent: AgentProcess;
let hooks: Server;
let dir: string;
let filesDir: string;
const calls: Array<{ method: string; url: string }> = [];
const waiters: Array<() => void> = [];
let failing = false;

const secret = (value: string) => ({ kind: 'secret', value });
const metric = (name: string, labels: string): Promise<number> =>
  metricValue(agent.adminUrl, `config_sidecar_agent_files_reload_hook_${name}`, labels).then((v) => v ?? 0);

/** Resolves once `count` hook calls were received in total. */
function callsReach(count: number): Promise<void> {
  if (calls.length >= count) return Promise.resolve();
  return within(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (calls.length >= count) resolve();
        else waiters.push(check);
      };
      waiters.push(check);
    }),
    `${count} hook calls`,
  );
}

before(async () => {
  hooks = createServer((req, res) => {
    calls.push({ method: req.method ?? '', url: req.url ?? '' });
    for (const w of waiters.splice(0)) w();
    res.writeHead(failing ? 500 : 200).end();
  });
  await new Promise<void>((resolve) => hooks.listen(0, '127.0.0.1', resolve));
  const port = (hooks.address() as { port: number }).port;
  server = await startServerProcess();
  await putItem(server, 'production/app/token', secret('t-0'));
  await putItem(server, 'production/app/other', secret('o-0'));
  // As a pod runs it (where the pod harness works): the agent as 65532, --files-dir a kubelet-made emptyDir.
  const pod = defaultPod();
  dir = await makeAgentDir(pod, 'cs-reload-hook-');
  filesDir = join(dir, 'files');
  if (pod) await makeVolume(filesDir, pod.fsGroup);
  const reload = { http: `http://127.0.0.1:${port}/-/reload`, method: 'POST', timeout: '2s', retries: 1 };
  const files = [
    { path: 'token.txt', items: ['production/app/token'], onChange: reload },
    { path: 'both.json', items: ['production/app/token', 'production/app/other'], format: 'json', onChange: reload },
    { path: 'other.txt', items: ['production/app/other'], onChange: { http: `http://localhost:${port}/other`, method: 'PUT' } },
  ];
  writeFileSync(join(dir, 'agent.yaml'), `files: ${JSON.stringify(files)}\n`, { mode: 0o644 });
  agent = await startAgentProcess(server, { prefixes: ['production'], args: ['--config', join(dir, 'agent.yaml'), '--files-dir', filesDir, '--cache-ttl', '1h'] });
  await waitReady(agent.adminUrl);
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  await new Promise((resolve) => hooks?.close(resolve));
  await rm(server?.dataDir ?? '', { recursive: true, force: true });
  await rm(dir ?? '', { recursive: true, force: true, maxRetries: 5 });
});

const publications = (): number => agent.logs.filter((l) => l.msg === 'files published').length;

test('each publication calls each hook of the changed files once; the start-up publication calls none', async () => {
  assert.equal(publications(), 1, 'one start-up publication');
  assert.equal(calls.length, 0, 'no hook call for the first render');

  // token feeds two files with the same hook: one publication, one call.
  await putItem(server, 'production/app/token', secret('t-1'));
  await callsReach(1);
  await agent.waitForLog((l) => l.msg === 'files published' && (l.files as string[]).includes('token.txt'));
  assert.equal(readFileSync(join(filesDir, 'token.txt'), 'utf8'), 't-1');
  assert.deepEqual(calls, [{ method: 'POST', url: '/-/reload' }]);

  // other feeds both.json (reload hook) and other.txt (its own hook): one publication, one call each.
  await putItem(server, 'production/app/other', secret('o-1'));
  await callsReach(3);
  assert.deepEqual(calls.slice(1).map((c) => `${c.method} ${c.url}`).sort(), ['POST /-/reload', 'PUT /other']);
  assert.equal(publications(), 3);
  assert.equal(await metric('calls_total', 'hook="http://localhost:' + (hooks.address() as { port: number }).port + '/other",outcome="ok"'), 1);
});

test('a change set touching files with both hooks is one change: one call per hook, after both files are published', async () => {
  const before = calls.length;
  const published = publications();
  const res = await http(server.httpUrl, 'POST', '/v1/changes', {
    token: server.rootToken,
    body: { changes: [{ item: 'production/app/token', kind: 'secret', value: 't-set' }, { item: 'production/app/other', kind: 'secret', value: 'o-set' }] },
  });
  assert.equal(res.status, 200, res.text);
  await callsReach(before + 2);
  assert.deepEqual(calls.slice(before).map((c) => `${c.method} ${c.url}`).sort(), ['POST /-/reload', 'PUT /other']);
  assert.ok(publications() > published);
  assert.equal(readFileSync(join(filesDir, 'token.txt'), 'utf8'), 't-set');
  assert.equal(readFileSync(join(filesDir, 'other.txt'), 'utf8'), 'o-set');
});

test('a failing hook is retried and counted; the files are published regardless', async () => {
  failing = true;
  const before = calls.length;
  const from = agent.logs.length;
  const published = agent.waitForLog((l) => agent.logs.indexOf(l) >= from && l.msg === 'files published' && (l.files as string[]).includes('token.txt'));
  // Distinctive: a short value can occur in the log by chance (a temp path "cs-agent-2…" contains "t-2"); the README run failed once that way.
  const value = 'hook-value-t2-Qz7';
  await putItem(server, 'production/app/token', secret(value));
  await published;
  assert.equal(readFileSync(join(filesDir, 'token.txt'), 'utf8'), value, 'published while the hook fails');
  await callsReach(before + 2); // the call and its one retry
  await agent.waitForLog((l) => l.msg === 'reload hook failed; the files are published, the app was not told');
  const port = (hooks.address() as { port: number }).port;
  assert.equal(await metric('calls_total', `hook="http://127.0.0.1:${port}/-/reload",outcome="failed"`), 1);
  assert.equal(await metric('retries_total', `hook="http://127.0.0.1:${port}/-/reload"`), 1);
  assert.ok(!agent.output().includes(value), 'no value in the agent output');
  failing = false;
});

test('a non-loopback or non-http hook URL is refused at config load, naming the entry', async () => {
  const entry = (http: string) => [{ path: 'a.txt', items: ['production/app/token'], onChange: { http } }];
  for (const bad of ['http://10.0.0.7:8080/-/reload', 'http://example.com/-/reload', 'https://127.0.0.1/-/reload', 'http://user:pw@127.0.0.1/x', 'not a url']) {
    assert.throws(() => parseFileSpecs(entry(bad)), (e: unknown) => e instanceof SettingError && /files\[0\] \(a\.txt\) onChange\.http: .* not a loopback http URL/.test(e.message), bad);
  }
  assert.equal(parseFileSpecs(entry('http://[::1]:9090/-/reload'))[0]?.onChange?.method, 'POST');
  assert.throws(() => parseFileSpecs([{ path: 'a.txt', items: ['production/app/token'], onChange: { http: 'http://127.0.0.1/x', signal: 'SIGHUP' } }]), /unknown key\(s\) "signal"/);

  const config = join(dir, 'bad.yaml');
  writeFileSync(config, `files: ${JSON.stringify(entry('http://10.0.0.7/-/reload'))}\n`);
  const bad = spawnCli('agent', ['agent', '--config', config, '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--prefix', 'production', '--socket', join(dir, 'bad', 'a.sock'), '--http-listen', 'off', '--admin-listen', '127.0.0.1:0', '--files-dir', join(dir, 'bad-files')], {});
  assert.equal(await within(bad.exited, 'agent exit'), 2);
  assert.match(bad.stderr(), /files\[0\] \(a\.txt\) onChange\.http/);
});
