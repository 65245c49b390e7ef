/**
 * The agent as a pod runs it (test/helpers/pod-harness.ts): uid 65532 with
 * groups [2000] and no capabilities, the socket and files directories
 * kubelet-made emptyDirs (root:2000, 2777, setgid; files memory-backed), an
 * app (uid 1000 in group 2000) and a stranger (in no shared group).
 *
 * The first test failed on the old agent: it chmodded `--files-dir` itself
 * (EPERM as 65532, retried forever, never ready), and where it could, its
 * snapshot directories lost setgid so files came out 65532:65532.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { DEFAULT_POD, asIdentity, canRead, canUseSocket, makePodDir, makeVolume, ownedByRoot, podSupport, reachableProject, unreachableFor, type Volume } from './helpers/pod-harness.ts';
import { startServerProcess, type LogLine, type ServerProcess } from './helpers/server-process.ts';

const support = podSupport();
const skip = support.ok ? false : support.reason;
const pod = DEFAULT_POD;

let server: ServerProcess | undefined;
const cleanups: Array<() => Promise<unknown>> = [];

before(async () => {
  if (skip) return;
  server = await startServerProcess();
  await putItem(server, 'production/app/db-password', { kind: 'secret', value: 'first' });
});

after(async () => {
  for (const step of cleanups.reverse()) await step().catch(() => undefined);
  await server?.stop();
  if (server) await rm(server.dataDir, { recursive: true, force: true });
});

test('as 65532 with groups [2000] and no capabilities on root:2000 2777 volumes: ready, files 0440 group 2000 for the app, nothing for a stranger, updates republish', { skip }, async () => {
  assert.ok(server);
  const dir = await makePodDir('cs-agent-pod-');
  const files: Volume = await makeVolume(join(dir, 'files'), pod.fsGroup, { medium: 'Memory', sizeBytes: 8 * 1024 * 1024 });
  cleanups.push(async () => {
    await files.unmount();
    await rm(dir, { recursive: true, force: true });
  });
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `files: ${JSON.stringify([{ path: 'db/password', items: ['production/app/db-password'] }])}\n`);
  const agent: AgentProcess = await startAgentProcess(server, { dir, prefixes: ['production/app'], pod, args: ['--config', config, '--files-dir', files.path, '--cache-ttl', '1h'] });
  cleanups.push(() => agent.stop());
  await waitReady(agent.adminUrl);

  const published = join(files.path, 'db/password');
  const st = await stat(published);
  assert.equal(st.mode & 0o777, 0o440);
  assert.equal(st.gid, pod.fsGroup, 'the file keeps the volume group');
  assert.equal(st.uid, pod.agent.uid);
  const volume = await stat(files.path);
  assert.equal(volume.mode & 0o7777, 0o2777, 'the kubelet-made directory is never changed');
  assert.equal(volume.uid, 0);

  assert.equal(await canRead(pod.app, published), true, 'the app reads the file');
  assert.equal(await canRead(pod.app, agent.tokenPath), true, 'the app reads the pod token');
  assert.equal(await canUseSocket(pod.app, agent.socketPath), true, 'the app uses the socket');
  assert.equal(await canRead(pod.stranger, published), false, 'a stranger cannot read the file');
  assert.equal(await canRead(pod.stranger, agent.tokenPath), false, 'a stranger cannot read the token');
  assert.equal(await canUseSocket(pod.stranger, agent.socketPath), false, 'a stranger cannot use the socket');
  assert.equal((await stat(agent.socketPath)).mode & 0o777, 0o660);
  assert.equal((await stat(agent.socketPath)).gid, pod.fsGroup);
  assert.equal((await stat(agent.tokenPath)).mode & 0o777, 0o440);
  assert.equal((await stat(agent.tokenPath)).gid, pod.fsGroup);

  const from = agent.logs.length;
  const republished = agent.waitForLog((l: LogLine) => agent.logs.indexOf(l) >= from && l.msg === 'files published');
  await putItem(server, 'production/app/db-password', { kind: 'secret', value: 'second' });
  await republished;
  assert.equal(await readFile(published, 'utf8'), 'second');
  assert.equal((await stat(published)).gid, pod.fsGroup);
  assert.equal(await canRead(pod.app, published), true);
  assert.deepEqual(await ownedByRoot(files.path), [], 'nothing in the files volume is root-owned');
  assert.deepEqual(await ownedByRoot(join(dir, 'run')), [], 'nothing in the socket volume is root-owned');
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/app/db-password')).status, 200);
});

test('a files dir the agent cannot write stops it at start (exit 2) naming the path, its uid/gids and the volume it needs', { skip }, async () => {
  assert.ok(server);
  const dir = await makePodDir('cs-agent-pod-ro-');
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const filesDir = join(dir, 'files');
  await mkdir(filesDir);
  await chmod(filesDir, 0o755); // root:root 0755: a hostPath or image directory, not an emptyDir with fsGroup
  await makeVolume(join(dir, 'run'), pod.fsGroup);
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `files: ${JSON.stringify([{ path: 'x', items: ['production/app/db-password'] }])}\n`);
  await writeFile(join(dir, 'token'), server.rootToken, { mode: 0o444 });
  const project = reachableProject(pod.agent);
  const wrapped = asIdentity(pod.agent, project.node, [
    project.cli, 'agent', '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--token-file', join(dir, 'token'),
    '--prefix', 'production/app', '--socket', join(dir, 'run', 'agent.sock'), '--http-listen', 'off', '--admin-listen', '127.0.0.1:0',
    '--config', config, '--files-dir', filesDir,
  ]);
  const child = spawn(wrapped.command, wrapped.args, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  child.stdout.resume();
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  assert.equal(code, 2, stderr);
  assert.match(stderr, /--files-dir/);
  assert.ok(stderr.includes(filesDir), stderr);
  assert.match(stderr, /uid 65532 gid 65532 groups \[2000\b/);
  assert.match(stderr, /fsGroup/);
});

test('the harness finds a directory uid 65532 cannot traverse (a checkout under mktemp -d)', { skip }, async () => {
  const dir = await makePodDir('cs-agent-pod-trav-');
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const closed = join(dir, 'ci-clone');
  await mkdir(join(closed, 'src'), { recursive: true });
  await writeFile(join(closed, 'src', 'main.ts'), '');
  await chmod(closed, 0o700);
  assert.equal(unreachableFor(join(closed, 'src', 'main.ts'), pod.agent), closed);
  await chmod(closed, 0o755);
  assert.equal(unreachableFor(join(closed, 'src', 'main.ts'), pod.agent), undefined);
  // The project itself is reachable for the agent (directly or staged).
  const project = reachableProject(pod.agent);
  assert.equal(unreachableFor(project.cli, pod.agent), undefined);
});

test('the pod token is written next to the socket, readable by the pod group only, with the TCP listener off too', { skip }, async () => {
  assert.ok(server);
  const agent = await startAgentProcess(server, { prefixes: ['production/app'], pod, args: ['--http-listen', 'off'] });
  cleanups.push(async () => {
    await agent.stop();
    await rm(agent.dir, { recursive: true, force: true });
  });
  assert.equal(agent.httpUrl, 'off');
  assert.equal(agent.tokenPath, join(agent.dir, 'run', 'token'));
  const st = await stat(agent.tokenPath);
  assert.equal(st.mode & 0o777, 0o440);
  assert.equal(st.gid, pod.fsGroup);
  assert.equal(await canRead(pod.app, agent.tokenPath), true);
  assert.equal(await canRead(pod.stranger, agent.tokenPath), false);
});
