/**
 * Warm restart from an encrypted snapshot (issue 19), with real processes:
 * the agent as a pod runs it (uid 65532, no capabilities, its snapshot
 * directory a kubelet-made memory-backed emptyDir) where the pod harness
 * works, a real server that is stopped, and SIGKILL.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultPod, makeAgentDir, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume } from './helpers/pod-harness.ts';
import { http, metricValue, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { runCli } from './helpers/process.ts';
import { kekOf, openTestPlane, scanForNeedles } from './helpers/store-fixtures.ts';
import { startTcpProxy, waitForMetric } from './helpers/tcp-proxy.ts';

const PREFIX = 'production/app';
const SECRET = `${PREFIX}/db-password`;
const SETTINGS = `${PREFIX}/settings`;
const WRITES = 'config_sidecar_agent_snapshot_writes_total';
const RING = `${PREFIX}/signing-keys`;

interface Pod {
  readonly dir: string;
  readonly snapshotDir: string;
  /** Rendered files (db/password from the secret), on a volume of their own. */
  readonly filesDir: string;
  start(server: Pick<ServerProcess, 'httpUrl' | 'grpcAddress' | 'rootToken'>, extra?: readonly string[]): Promise<AgentProcess>;
}

/** An agent directory with a private memory-backed snapshot volume, kept across the agent's restarts. */
async function podWithSnapshot(t: TestContext, options: { files?: boolean } = {}): Promise<Pod> {
  const pod = defaultPod();
  const dir = await makeAgentDir(pod, 'cs-warm-');
  const snapshotDir = join(dir, 'snapshot');
  const volume = pod ? await makeVolume(snapshotDir, pod.fsGroup, { medium: 'Memory', sizeBytes: 8 * 1024 * 1024 }) : undefined;
  const filesDir = join(dir, 'files');
  const files = pod ? await makeVolume(filesDir, pod.fsGroup, { medium: 'Memory', sizeBytes: 8 * 1024 * 1024 }) : undefined;
  if (!pod) await Promise.all([mkdir(snapshotDir), mkdir(filesDir)]);
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `files: ${JSON.stringify([{ path: 'db/password', items: [SECRET] }])}\n`);
  const agents: AgentProcess[] = [];
  t.after(async () => {
    for (const agent of agents) await agent.stop('SIGKILL').catch(() => undefined);
    await volume?.unmount();
    await files?.unmount();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    dir,
    snapshotDir,
    filesDir,
    async start(server, extra = []) {
      const agent = await startAgentProcess(server, {
        dir,
        prefixes: [PREFIX],
        prefetch: [SECRET, SETTINGS],
        args: [...(options.files === false ? [] : ['--config', config, '--files-dir', filesDir]), '--snapshot-dir', snapshotDir, '--snapshot-interval', '200ms', '--cache-ttl', '10m', ...extra],
      });
      agents.push(agent);
      return agent;
    },
  };
}

/** Waits until the agent has written a snapshot after this call (so it holds what is served now). */
/**
 * Waits for `writes` more snapshot writes. One write may have gathered its content before what the test just
 * did (it was in flight when `before` was read); with two, the second started after it.
 */
async function nextSnapshot(agent: AgentProcess, writes = 1): Promise<void> {
  const before = (await metricValue(agent.adminUrl, WRITES, 'outcome="ok"')) ?? 0;
  await waitForMetric(() => metricValue(agent.adminUrl, WRITES, 'outcome="ok"'), (v) => (v ?? 0) >= before + writes, 'a snapshot write', 20_000);
}

async function seed(server: ServerProcess, tag: string): Promise<{ secret: string; feature: string }> {
  const secret = `warm-secret-${tag}`;
  const feature = `warm-feature-${tag}`;
  await putItem(server, SECRET, { kind: 'secret', value: secret });
  await putItem(server, SETTINGS, { kind: 'config', value: { feature } });
  return { secret, feature };
}

/** REST reads of item values the server answered (what an agent's refetch costs it). */
async function envelopeReads(server: ServerProcess): Promise<number> {
  const res = await http(server.adminUrl, 'GET', '/metrics');
  return res.text
    .split('\n')
    .filter((l) => l.startsWith('config_sidecar_server_http_requests_total{') && l.includes('route="/v1/envelopes/{path}"'))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

test('SIGKILLed with the server stopped, the restarted agent serves its last values stale-marked at once and is ready; the snapshot holds no plaintext or data key', async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop().catch(() => undefined);
    await rm(server.dataDir, { recursive: true, force: true });
  });
  const pod = await podWithSnapshot(t);
  const { secret, feature } = await seed(server, randomBytes(6).toString('hex'));

  const first = await pod.start(server);
  await waitReady(first.adminUrl);
  assert.equal((await socketGet(first.socketPath, `/v1/items/${SECRET}`)).json.value, secret);
  await nextSnapshot(first);
  await server.stop();
  await first.stop('SIGKILL');
  // The restarted agent must render the files from the snapshot, not find them left over.
  for (const entry of await readdir(pod.filesDir)) await rm(join(pod.filesDir, entry), { recursive: true, force: true });

  const startedAt = Date.now();
  const second = await pod.start(server);
  const res = await socketGet(second.socketPath, `/v1/items/${SECRET}`);
  const servedMs = Date.now() - startedAt;
  const logged = (msg: string): number => Date.parse(String(second.logs.find((l) => l.msg === msg)?.time));
  t.diagnostic(
    `first value served ${servedMs} ms after the restarted agent was spawned (process start included); ` +
      `${logged('agent listening') - logged('memory budget')} ms from the agent's first log line to listening with the snapshot restored`,
  );
  assert.equal(res.status, 200, res.body.toString());
  assert.equal(res.json.value, secret);
  assert.match(String(res.headers.warning), /^110 /, 'stale-marked');
  assert.ok(res.headers['x-config-stale'] !== undefined, 'X-Config-Stale names the age');
  const config = await socketGet(second.socketPath, `/v1/items/${SETTINGS}`);
  assert.equal(config.status, 200);
  assert.deepEqual(config.json.value, { feature });
  assert.ok(
    second.logs.findIndex((l) => l.msg === 'snapshot restored; serving it stale-marked until the stream resumes') < second.logs.findIndex((l) => l.msg === 'agent listening'),
    'values are restored before the agent listens, so its first answer already has them',
  );

  await waitReady(second.adminUrl, 200, 5_000);
  const ready = await http(second.adminUrl, 'GET', '/readyz');
  assert.equal(ready.json.checks.snapshot.ok, true);
  assert.match(ready.json.checks.snapshot.detail, /serving 2 value\(s\) from a snapshot/);
  assert.equal(await metricValue(second.adminUrl, 'config_sidecar_agent_snapshot_restored_values'), 2);
  assert.equal(await readFile(join(pod.filesDir, 'db/password'), 'utf8'), secret, 'files are rendered from the snapshot');

  for (const name of ['snapshot', 'snapshot.key']) {
    const st = await stat(join(pod.snapshotDir, name));
    assert.equal(st.mode & 0o777, 0o600, `${name} is private to the agent`);
  }
  // What a snapshot copied out of the pod would show: no value, no data key, in any spelling.
  const { plane } = await openTestPlane(t, server.dataDir, { kek: kekOf(server.kek) });
  const deks = await plane.getDeks(PREFIX);
  const needles = [
    { label: 'secret value', bytes: Buffer.from(secret) },
    { label: 'config value', bytes: Buffer.from(feature) },
    ...deks.keys.map((k) => ({ label: `DEK v${k.version}`, bytes: Buffer.from(k.dek) })),
  ];
  assert.ok(deks.keys.length > 0);
  assert.equal(await second.stop('SIGTERM'), 0);
  const scan = await scanForNeedles(pod.snapshotDir, needles);
  assert.deepEqual(scan.files.map((f) => f.slice(pod.snapshotDir.length + 1)).sort(), ['snapshot', 'snapshot.key']);
  assert.deepEqual(scan.hits, []);
});

test('a tampered or foreign snapshot is refused with a log line and a metric, and nothing from it is served', async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop().catch(() => undefined);
    await rm(server.dataDir, { recursive: true, force: true });
  });
  const pod = await podWithSnapshot(t);
  const { secret } = await seed(server, randomBytes(6).toString('hex'));
  const first = await pod.start(server);
  await waitReady(first.adminUrl);
  await nextSnapshot(first);
  await server.stop();
  await first.stop('SIGKILL');
  const good = await readFile(join(pod.snapshotDir, 'snapshot'));
  const key = await readFile(join(pod.snapshotDir, 'snapshot.key'));

  const cases: ReadonlyArray<{ reason: string; prepare: () => Promise<void> }> = [
    {
      reason: 'tampered',
      prepare: async () => {
        const bad = Buffer.from(good);
        bad[bad.length - 40] = (bad[bad.length - 40] ?? 0) ^ 0x01;
        await writeFile(join(pod.snapshotDir, 'snapshot'), bad);
      },
    },
    {
      // Another pod's snapshot (or this one after its key was lost): sealed with another key.
      reason: 'foreign-key',
      prepare: async () => {
        await writeFile(join(pod.snapshotDir, 'snapshot'), good);
        await writeFile(join(pod.snapshotDir, 'snapshot.key'), randomBytes(32));
      },
    },
    {
      reason: 'truncated',
      prepare: async () => {
        await writeFile(join(pod.snapshotDir, 'snapshot.key'), key);
        await writeFile(join(pod.snapshotDir, 'snapshot'), good.subarray(0, good.length - 7));
      },
    },
  ];
  for (const { reason, prepare } of cases) {
    await prepare();
    const agent = await pod.start(server);
    const refusal = agent.logs.find((l) => l.msg === 'snapshot refused; nothing from it is served, waiting for the server');
    assert.equal(refusal?.reason, reason, agent.output());
    assert.equal(await metricValue(agent.adminUrl, 'config_sidecar_agent_snapshot_refused_total', `reason="${reason}"`), 1);
    const res = await socketGet(agent.socketPath, `/v1/items/${SECRET}`);
    assert.notEqual(res.status, 200, `${reason}: nothing from the snapshot is served`);
    assert.ok(!res.body.includes(secret));
    assert.equal((await http(agent.adminUrl, 'GET', '/readyz')).status, 503, `${reason}: not ready without the server`);
    await assert.rejects(stat(join(pod.snapshotDir, 'snapshot')), /ENOENT/, 'the refused snapshot is deleted');
    await agent.stop('SIGKILL');
  }
});

test('restarted with the server up, the agent resumes from the snapshot position: no value is fetched again, a change made meanwhile arrives by replay', async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop().catch(() => undefined);
    await rm(server.dataDir, { recursive: true, force: true });
  });
  const pod = await podWithSnapshot(t);
  const { secret } = await seed(server, randomBytes(6).toString('hex'));
  const first = await pod.start(server);
  await waitReady(first.adminUrl);
  await nextSnapshot(first);
  // SIGTERM writes the last snapshot on the way out.
  assert.equal(await first.stop('SIGTERM'), 0);
  const changed = await putItem(server, SETTINGS, { kind: 'config', value: { feature: 'changed-while-down' } });

  const readsBefore = await envelopeReads(server);
  // The stream cannot connect at first (its path is cut): the rendered file and the prefetch are
  // served from the snapshot meanwhile, and neither may fetch a value the resume is about to vouch for.
  const grpc = await startTcpProxy(server.grpcAddress);
  t.after(() => grpc.close());
  grpc.cut();
  const second = await pod.start({ ...server, grpcAddress: grpc.address });
  await second.waitForLog((l) => l.msg === 'prefetch complete');
  assert.equal(await envelopeReads(server), readsBefore, 'nothing read for the prefetch or the file while the stream is down');
  grpc.restore();
  // Connected and resumed: the stream check says so and the snapshot no longer stands in.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await http(second.adminUrl, 'GET', '/readyz');
    if (ready.status === 200 && ready.json.checks.snapshot === undefined && /^connected; applied revision (\d+)/.exec(ready.json.checks.stream.detail)?.[1] === String(changed.revision)) break;
    assert.ok(Date.now() < deadline, `never resumed to revision ${changed.revision}: ${ready.text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const value = await socketGet(second.socketPath, `/v1/items/${SECRET}`);
  assert.equal(value.status, 200);
  assert.equal(value.json.value, secret);
  assert.equal(value.headers.warning, undefined, 'fresh once resumed');
  const settings = await socketGet(second.socketPath, `/v1/items/${SETTINGS}`);
  assert.deepEqual(settings.json.value, { feature: 'changed-while-down' }, 'the change made while the agent was down came by replay');
  assert.equal(await envelopeReads(server), readsBefore, 'the server answered no value fetch: no full refetch');
  assert.equal(second.logs.some((l) => l.msg === 'resync required: cache dropped'), false);
});

test('a deleted value leaves the snapshot at once, not at the next interval: a restart never serves it', async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop().catch(() => undefined);
    await rm(server.dataDir, { recursive: true, force: true });
  });
  // No rendered file re-reads the deleted secret (its 404 would rewrite the snapshot too): only the deletion can.
  const pod = await podWithSnapshot(t, { files: false });
  const { secret, feature } = await seed(server, randomBytes(6).toString('hex'));
  // An interval no test waits out: only the deletion can cause the write.
  const first = await pod.start(server, ['--snapshot-interval', '1h']);
  await waitReady(first.adminUrl);
  assert.equal((await socketGet(first.socketPath, `/v1/items/${SECRET}`)).json.value, secret);
  const writes = (await metricValue(first.adminUrl, WRITES, 'outcome="ok"')) ?? 0;
  const deleted = await http(server.httpUrl, 'DELETE', `/v1/items/${SECRET}?env=base`, { token: server.rootToken });
  assert.equal(deleted.status, 200, deleted.text);
  await waitForMetric(() => metricValue(first.adminUrl, WRITES, 'outcome="ok"'), (v) => (v ?? 0) > writes, 'the snapshot rewritten after the deletion', 20_000);
  await server.stop();
  await first.stop('SIGKILL');

  const second = await pod.start(server, ['--snapshot-interval', '1h']);
  const gone = await socketGet(second.socketPath, `/v1/items/${SECRET}`);
  assert.notEqual(gone.status, 200);
  assert.ok(!gone.body.includes(secret), 'the deleted secret is not in the snapshot');
  const kept = await socketGet(second.socketPath, `/v1/items/${SETTINGS}`);
  assert.equal(kept.status, 200);
  assert.deepEqual(kept.json.value, { feature });
});

test('a snapshot from another store behind the same address is dropped on the first stream, with a log line and a metric', async (t) => {
  const first = await startServerProcess();
  const pod = await podWithSnapshot(t, { files: false });
  const { secret } = await seed(first, randomBytes(6).toString('hex'));
  const agent = await pod.start(first);
  t.after(async () => {
    await first.stop().catch(() => undefined);
    await rm(first.dataDir, { recursive: true, force: true });
  });
  await waitReady(agent.adminUrl);
  await nextSnapshot(agent);
  await agent.stop('SIGKILL');
  await first.stop();
  // Another control plane (a fresh store) on the same addresses: only its stream can say it is not the same store.
  const other = await startServerProcess({ args: ['--http-listen', new URL(first.httpUrl).host, '--grpc-listen', first.grpcAddress] });
  t.after(async () => {
    await other.stop().catch(() => undefined);
    await rm(other.dataDir, { recursive: true, force: true });
  });
  await putItem(other, SECRET, { kind: 'secret', value: 'the-other-store' });
  const second = await pod.start(other);
  await second.waitForLog((l) => l.msg === 'snapshot was from another store; its values are dropped');
  assert.equal(await metricValue(second.adminUrl, 'config_sidecar_agent_snapshot_refused_total', 'reason="foreign-store"'), 1);
  const res = await socketGet(second.socketPath, `/v1/items/${SECRET}`);
  assert.equal(res.json.value, 'the-other-store');
  assert.ok(!res.body.includes(secret));
});

test('a key ring read survives a restart with the server unreachable: served stale-marked from the snapshot (JSON, jwks, `get --ring`), then read again from the server once the stream resumes', async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop().catch(() => undefined);
    await rm(server.dataDir, { recursive: true, force: true });
  });
  // The server stays up; the agent reaches it through proxies the test cuts (its scope names these addresses).
  const rest = await startTcpProxy(new URL(server.httpUrl).host);
  const grpc = await startTcpProxy(server.grpcAddress);
  t.after(() => Promise.all([rest.close(), grpc.close()]));
  const via = { ...server, httpUrl: `http://${rest.address}`, grpcAddress: grpc.address };
  const jwk = (kid: string): Record<string, unknown> => ({ ...(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }) as Record<string, unknown>), kid, alg: 'ES256' });
  await seed(server, randomBytes(6).toString('hex'));
  await putItem(server, RING, { kind: 'config', value: jwk('k1'), ringGrace: '1h' });
  await putItem(server, RING, { kind: 'config', value: jwk('k2') });
  const pod = await podWithSnapshot(t, { files: false });
  const kids = (res: { status: number; body: Buffer }): string[] => {
    assert.equal(res.status, 200, res.body.toString());
    const ring = JSON.parse(res.body.toString()) as { current: { value: { kid: string } }; previous: Array<{ value: { kid: string } }> };
    return [ring.current.value.kid, ...ring.previous.map((p) => p.value.kid)];
  };

  const first = await pod.start(via);
  await waitReady(first.adminUrl);
  assert.deepEqual(kids(await socketGet(first.socketPath, `/v1/items/${RING}?ring=1`)), ['k2', 'k1']);
  // A snapshot that began after the ring was first held (a write in flight at the read would not hold it).
  await nextSnapshot(first, 2);
  await first.stop('SIGKILL');

  rest.cut();
  grpc.cut();
  const second = await pod.start(via);
  const stale = await socketGet(second.socketPath, `/v1/items/${RING}?ring=1`);
  assert.deepEqual(kids(stale), ['k2', 'k1'], 'the ring from the snapshot, with the server unreachable');
  assert.match(String(stale.headers.warning), /^110 /, 'stale-marked');
  assert.ok(stale.headers['x-config-stale'] !== undefined);
  assert.equal(second.logs.find((l) => l.msg === 'snapshot restored; serving it stale-marked until the stream resumes')?.rings, 1);
  assert.match((await http(second.adminUrl, 'GET', '/readyz')).json.checks.snapshot.detail, /serving 2 value\(s\) and 1 key ring\(s\) from a snapshot/);
  const jwks = await socketGet(second.socketPath, `/v1/items/${RING}?ring=1&format=jwks`);
  assert.equal(jwks.status, 200, jwks.body.toString());
  assert.deepEqual((JSON.parse(jwks.body.toString()) as { keys: Array<{ kid: string; d?: string }> }).keys.map((k) => [k.kid, k.d]), [['k2', undefined], ['k1', undefined]]);
  const cli = await runCli(['get', RING, '--ring', '--socket', second.socketPath]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.deepEqual(kids({ status: 200, body: Buffer.from(cli.stdout) }), ['k2', 'k1'], 'config-sidecar get --ring');

  const readsBefore = await envelopeReads(server);
  rest.restore();
  grpc.restore();
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await http(second.adminUrl, 'GET', '/readyz');
    if (ready.status === 200 && ready.json.checks.snapshot === undefined) break;
    assert.ok(Date.now() < deadline, `never resumed: ${ready.text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const fresh = await socketGet(second.socketPath, `/v1/items/${RING}?ring=1`);
  assert.deepEqual(kids(fresh), ['k2', 'k1']);
  assert.equal(fresh.headers.warning, undefined, 'fresh once the stream resumed');
  assert.equal(await envelopeReads(server), readsBefore + 1, 'the restored ring was read again from the server before it was served as fresh');
});
