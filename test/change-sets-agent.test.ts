/**
 * An atomic change set through a real server and a real agent process: a
 * reader on the agent's socket and a reader of the rendered files never see
 * one member new and another old. The same scenario run with the agent
 * applying members one by one (CONFIG_SIDECAR_TEST_APPLY_SETS=members, a
 * test-hook mode) does see the mix, which shows the test notices the
 * difference. The gap between two members is made deterministic with the
 * stream-split hook (a stall between two messages), not with timing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultPod, hook, makeAgentDir, openSse, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume } from './helpers/pod-harness.ts';
import { http, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { startSnapshotReader } from './helpers/files-reader-run.ts';

const TEST_TIMEOUT_MS = 120_000;
/** Sets written while the readers run; bounded in count (and by the test timeout in time). */
const LOAD_SETS = 40;

interface Stack {
  readonly server: ServerProcess;
  readonly agent: AgentProcess;
  readonly filesDir: string;
}

async function stack(t: { after(fn: () => unknown): void }, mode: 'atomic' | 'members'): Promise<Stack> {
  const cleanup: Array<() => unknown> = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step();
  });
  const server = await startServerProcess({ args: ['--rate-limit', '0'] });
  cleanup.push(async () => {
    await server.stop();
    await rm(server.dataDir, { recursive: true, force: true });
  });
  await writeSet(server, 0);
  // As a pod runs it: the agent as 65532, --files-dir a kubelet-made emptyDir (pod harness), where the harness works.
  const pod = defaultPod();
  const dir = await makeAgentDir(pod, 'cs-sets-agent-');
  cleanup.push(() => rm(dir, { recursive: true, force: true, maxRetries: 5 }));
  const configPath = join(dir, 'agent.yaml');
  const files = [
    { path: 'username', items: ['production/db/username'] },
    { path: 'password', items: ['production/db/password'] },
    { path: 'db.env', items: ['production/db/username', 'production/db/password'], format: 'env' },
  ];
  writeFileSync(configPath, `files: ${JSON.stringify(files)}\n`);
  const filesDir = join(dir, 'files');
  if (pod) await makeVolume(filesDir, pod.fsGroup);
  const agent = await startAgentProcess(server, {
    prefixes: ['production'],
    args: ['--config', configPath, '--files-dir', filesDir, '--cache-ttl', '1h'],
    env: mode === 'members' ? { CONFIG_SIDECAR_TEST_APPLY_SETS: 'members' } : {},
  });
  cleanup.push(() => agent.stop());
  await waitReady(agent.adminUrl);
  return { server, agent, filesDir };
}

async function writeSet(server: ServerProcess, n: number): Promise<number> {
  const res = await http(server.httpUrl, 'POST', '/v1/changes', {
    token: server.rootToken,
    body: {
      changes: [
        { item: 'production/db/username', kind: 'secret', value: `u-${n}` },
        { item: 'production/db/password', kind: 'secret', value: `p-${n}` },
      ],
    },
  });
  assert.equal(res.status, 200, res.text);
  return res.json.revision as number;
}

async function read(agent: AgentProcess, name: 'username' | 'password'): Promise<number> {
  const res = await socketGet(agent.socketPath, `/v1/items/production/db/${name}`);
  assert.equal(res.status, 200, res.body.toString());
  return Number(String(res.json.value).slice(2));
}

const envFile = (s: Stack): string => readFileSync(join(s.filesDir, 'db.env'), 'utf8');

/** Writes set 1 with the stream stalled after its first member; returns what the socket and the file showed meanwhile. */
async function stalledSet(s: Stack): Promise<{ during: [number, number]; file: string; after: [number, number]; revision: number }> {
  assert.deepEqual([await read(s.agent, 'username'), await read(s.agent, 'password')], [0, 0]);
  await hook(s.agent.adminUrl, 'POST', '/debug/stream/split?deliver=1');
  const revision = await writeSet(s.server, 1);
  await hook(s.agent.adminUrl, 'GET', '/debug/stream/split-reached');
  const during: [number, number] = [await read(s.agent, 'username'), await read(s.agent, 'password')];
  const file = envFile(s);
  await hook(s.agent.adminUrl, 'POST', '/debug/stream/unsplit');
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${revision}`);
  const after: [number, number] = [await read(s.agent, 'username'), await read(s.agent, 'password')];
  return { during, file, after, revision };
}

test('a stream stalled inside a set: the agent serves the old pair until the whole set arrived, then the new pair; SSE sends the set together with its revision as id', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t, 'atomic');
  assert.equal(envFile(s), "USERNAME='u-0'\nPASSWORD='p-0'\n");
  const sse = openSse(s.agent.socketPath, '/v1/watch?prefix=production/db');
  await sse.opened;
  const from = s.agent.logs.length;
  const published = s.agent.waitForLog((l) => s.agent.logs.indexOf(l) >= from && l.msg === 'files published' && Array.isArray(l.files) && (l.files as string[]).includes('db.env'));
  const { during, file, after, revision } = await stalledSet(s);
  assert.deepEqual(during, [0, 0], 'nothing of the set is served before all of it arrived');
  assert.equal(file, "USERNAME='u-0'\nPASSWORD='p-0'\n", 'the file did not change while the set was incomplete');
  assert.deepEqual(after, [1, 1]);
  await published;
  assert.equal(envFile(s), "USERNAME='u-1'\nPASSWORD='p-1'\n");
  const events = [await sse.next(), await sse.next()];
  sse.close();
  assert.deepEqual(
    events.map((e) => [e.event, e.data.name, e.data.revision, e.id]),
    [
      ['changed', 'username', revision - 1, String(revision)],
      ['changed', 'password', revision, String(revision)],
    ],
    'each member is its own event (its own revision in data) with the set revision as SSE id',
  );
});

test('applied one by one (test mode), the same stall shows one new and one old value: the test above notices a non-atomic agent', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t, 'members');
  const { during, after } = await stalledSet(s);
  assert.deepEqual(during, [1, 0], 'username new, password old');
  assert.deepEqual(after, [1, 1]);
});

test('under load, a reader polling both items through the agent and a reader of the rendered files never see one new and one old; each set publishes the files at most once', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t, 'atomic');
  const fileReader = startSnapshotReader(t, s.filesDir, ['username', 'password'], /^[up]-(\d+)$/);
  const publicationsBefore = s.agent.logs.filter((l) => l.msg === 'files published').length;
  let writing = true;
  let checks = 0;
  const mixes: string[] = [];
  // Reads X, Y, X again: when X did not change across the pair, Y must come from the same set.
  const reader = async (first: 'username' | 'password', second: 'username' | 'password'): Promise<void> => {
    while (writing) {
      const x1 = await read(s.agent, first);
      const y = await read(s.agent, second);
      const x2 = await read(s.agent, first);
      if (x1 !== x2) continue;
      checks += 1;
      if (y !== x1 && mixes.length < 10) mixes.push(`${first}=${x1} ${second}=${y}`);
    }
  };
  const readers = [reader('username', 'password'), reader('password', 'username')];
  let revision = 0;
  for (let n = 1; n <= LOAD_SETS; n += 1) revision = await writeSet(s.server, n);
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${revision}`);
  await s.agent.waitForLog((l) => l.msg === 'files published' && readFileSync(join(s.filesDir, 'password'), 'utf8') === `p-${LOAD_SETS}`);
  writing = false;
  await Promise.all(readers);
  const files = await fileReader.stop();
  assert.deepEqual(mixes, [], 'no socket read mixed two sets');
  assert.ok(checks > 0, 'the socket readers made comparable reads');
  assert.deepEqual(files.mixes, [], 'no file snapshot mixed two sets');
  assert.ok(files.reads > 0);
  assert.deepEqual([await read(s.agent, 'username'), await read(s.agent, 'password')], [LOAD_SETS, LOAD_SETS]);
  const publications = s.agent.logs.filter((l) => l.msg === 'files published').length - publicationsBefore;
  assert.ok(publications <= LOAD_SETS, `${publications} publications for ${LOAD_SETS} sets`);
});
