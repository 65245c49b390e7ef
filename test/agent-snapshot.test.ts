/**
 * The warm-restart snapshot's parts (issue 19) without processes: the sealed
 * format refuses every torn, edited, foreign-key and foreign-scope file; a
 * restore fills the real value cache as stale-since-the-snapshot and refuses
 * one older than max-stale; the snapshotter writes on its interval only while
 * the stream vouches or something changed, at once when asked, and a last time
 * on close; the memory budget and readiness account for it.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsRegistry as Registry } from '../src/shared/metrics/registry.ts';
import { ManualClock } from '../src/shared/clock.ts';
import { createLogger } from '../src/shared/logger.ts';
import { keyIdOf, openSnapshot, scopeOf, sealedMarkOf, sealSnapshot, type SnapshotValue } from '../src/agent/snapshot/snapshot-format.ts';
import { loadSnapshotKey, SNAPSHOT_FILE } from '../src/agent/snapshot/snapshot-files.ts';
import { createSnapshotMetrics } from '../src/agent/snapshot/snapshot-metrics.ts';
import { restoreSnapshot } from '../src/agent/snapshot/snapshot-restore.ts';
import { observeDrops, Snapshotter, type SnapshotContent } from '../src/agent/snapshot/snapshotter.ts';
import { AppError } from '../src/shared/errors.ts';
import { ValueCache, release } from '../src/agent/value-cache.ts';
import { deriveMemoryBudget } from '../src/agent/memory-budget.ts';
import { agentReadiness } from '../src/agent/readiness.ts';
import { resolveAgentSettings } from '../src/agent/agent-settings.ts';
import { LogSink } from './helpers/store-fixtures.ts';

const SCOPE = scopeOf(['production/app'], 'prod');
const POSITION = { storeId: 'store-1', revision: 42, digest: 'abc' };
const MiB = 1024 * 1024;

function values(): SnapshotValue[] {
  return [
    { namespace: 'production/app', name: 'db-password', env: 'prod', kind: 'secret', version: 3, revision: 40, etag: '"v3"', plaintext: Buffer.from('hunter2-the-secret') },
    { namespace: 'production/app', name: 'settings', env: 'prod', kind: 'config', version: 1, revision: 41, etag: '"v1"', plaintext: Buffer.from('{"feature":"on"}') },
  ];
}

/** A format-1 (before key rings) or format-2 (before rollout marks) snapshot of values, as an agent of that version wrote it. */
function sealOldFormat(v: 1 | 2, key: Buffer, takenAt: number, vals: readonly SnapshotValue[]): Buffer {
  const body = Buffer.concat(
    vals.flatMap((v) => {
      const meta = Buffer.from(JSON.stringify({ namespace: v.namespace, name: v.name, env: v.env, kind: v.kind, version: v.version, revision: v.revision, etag: v.etag }));
      const len = (n: number): Buffer => Buffer.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
      return [len(meta.length), meta, len(v.plaintext.length), v.plaintext];
    }),
  );
  const header = Buffer.from(JSON.stringify({ v, keyId: keyIdOf(key), scope: SCOPE, takenAt, position: POSITION, values: vals.length, ...(v === 2 ? { rings: 0 } : {}), bodyBytes: body.length }));
  const headerLen = Buffer.alloc(4);
  headerLen.writeUInt32BE(header.length);
  const aad = Buffer.concat([Buffer.from('CSSNAP\u0000\u0001', 'latin1'), headerLen, header]);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(aad);
  return Buffer.concat([aad, iv, cipher.update(body), cipher.final(), cipher.getAuthTag()]);
}

test('format-1 and format-2 snapshots (written before key rings, before rollout marks) still open: their values, no ring, no mark', () => {
  const key = randomBytes(32);
  for (const v of [1, 2] as const) {
    const opened = openSnapshot(sealOldFormat(v, key, 1_000, values()), key, SCOPE);
    assert.ok(opened.ok, opened.ok ? '' : opened.detail);
    assert.equal(opened.header.v, v);
    assert.deepEqual([opened.rings, opened.rollouts], [[], []]);
    assert.deepEqual(opened.values.map((x) => x.plaintext.toString()), ['hunter2-the-secret', '{"feature":"on"}']);
  }
  // Format 3: the rollouts whose candidates the values are, sealed with them (no rollout id in the clear).
  const marks = [{ rollout: 'ro-0123456789ab', item: 'production/app/settings', version: 2 }];
  const file = sealSnapshot(key, { scope: SCOPE, takenAt: 1_000, position: POSITION }, values(), [], marks.map(sealedMarkOf));
  assert.ok(!file.includes(Buffer.from('ro-0123456789ab')));
  const opened = openSnapshot(file, key, SCOPE);
  assert.ok(opened.ok);
  assert.deepEqual([opened.header.v, opened.rollouts], [3, marks]);
});

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cs-snapshot-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('a sealed snapshot opens with its key and scope, and shows no value or item name', () => {
  const key = randomBytes(32);
  const file = sealSnapshot(key, { scope: SCOPE, takenAt: 1_000, position: POSITION }, values());
  assert.ok(!file.includes(Buffer.from('hunter2')) && !file.includes(Buffer.from('db-password')) && !file.includes(Buffer.from('feature')));
  const opened = openSnapshot(file, key, SCOPE);
  assert.ok(opened.ok);
  assert.deepEqual(opened.header.position, POSITION);
  assert.equal(opened.header.takenAt, 1_000);
  assert.deepEqual(
    opened.values.map((v) => ({ ...v, plaintext: v.plaintext.toString() })),
    values().map((v) => ({ ...v, plaintext: v.plaintext.toString() })),
  );
});

test('every truncation and every flipped byte is refused; another key or configuration is named as such', () => {
  const key = randomBytes(32);
  const file = sealSnapshot(key, { scope: SCOPE, takenAt: 1_000, position: POSITION }, values());
  for (let length = 0; length < file.length; length++) {
    const opened = openSnapshot(file.subarray(0, length), key, SCOPE);
    assert.equal(opened.ok, false, `cut at ${length}`);
  }
  assert.deepEqual(openSnapshot(file.subarray(0, file.length - 1), key, SCOPE), { ok: false, reason: 'truncated', detail: `${file.length - 1} of ${file.length} bytes` });
  for (let at = 0; at < file.length; at++) {
    const bad = Buffer.from(file);
    bad[at] = (bad[at] ?? 0) ^ 0x20;
    const opened = openSnapshot(bad, key, SCOPE);
    assert.equal(opened.ok, false, `byte ${at} flipped`);
  }
  const tamperedBody = Buffer.from(file);
  tamperedBody[file.length - 20] = (tamperedBody[file.length - 20] ?? 0) ^ 1;
  assert.equal((openSnapshot(tamperedBody, key, SCOPE) as { reason: string }).reason, 'tampered');
  assert.equal((openSnapshot(Buffer.concat([file, Buffer.from('x')]), key, SCOPE) as { reason: string }).reason, 'tampered');
  assert.equal((openSnapshot(file, randomBytes(32), SCOPE) as { reason: string }).reason, 'foreign-key');
  assert.equal((openSnapshot(file, key, scopeOf(['production'], 'prod')) as { reason: string }).reason, 'foreign-scope');
  assert.equal((openSnapshot(file, key, scopeOf(['production/app'], 'staging')) as { reason: string }).reason, 'foreign-scope');
  assert.equal((openSnapshot(Buffer.from('not a snapshot at all'), key, SCOPE) as { reason: string }).reason, 'format');
});

function cacheOn(clock: ManualClock, down: { since: number | undefined }): ValueCache {
  return new ValueCache({
    loader: () => Promise.reject(new Error('the server is down')),
    clock,
    ttl: 300_000,
    maxStale: 3_600_000,
    maxEntries: 100,
    maxBytes: MiB,
    streamDownSince: () => down.since,
  });
}

test('a restore fills the cache stale since the snapshot time; one older than max-stale is refused, counted and deleted', async (t) => {
  const dir = await tempDir(t);
  const { key, origin } = await loadSnapshotKey(dir);
  assert.equal(origin, 'created');
  assert.equal((await stat(join(dir, 'snapshot.key'))).mode & 0o777, 0o600);
  assert.deepEqual((await loadSnapshotKey(dir)).key, key, 'the key is read back on the next start');
  const clock = new ManualClock();
  const takenAt = clock.now() - 30_000;
  await writeFile(join(dir, SNAPSHOT_FILE), sealSnapshot(key, { scope: SCOPE, takenAt, position: POSITION }, values()));
  const down = { since: undefined as number | undefined };
  const cache = cacheOn(clock, down);
  const registry = new Registry();
  const metrics = createSnapshotMetrics(registry);
  const logs = new LogSink();
  const logger = createLogger({ component: 'test', level: 'info', destination: logs });
  const common = { dir, key, scope: SCOPE, clock, logger, metrics, allowed: () => true, restoreRing: () => assert.fail('this snapshot holds no ring') };
  const restored = await restoreSnapshot({
    ...common,
    maxStale: 3_600_000,
    restore: (v, at) => cache.restore(v, v.env, { kind: v.kind, version: v.version, revision: v.revision, etag: v.etag, plaintext: v.plaintext }, at),
  });
  assert.deepEqual(restored, { takenAt, position: POSITION, values: 2, rings: 0 });
  down.since = takenAt;
  const read = cache.readCached({ namespace: 'production/app', name: 'db-password' }, 'prod');
  assert.equal(read?.source, 'stale');
  assert.equal(read?.staleSeconds, 30, 'stale since the snapshot time');
  assert.equal(read?.value.plaintext.toString(), 'hunter2-the-secret');
  if (read) release(read.value);

  const refused = await restoreSnapshot({ ...common, maxStale: 10_000, restore: () => assert.fail('nothing is restored from an expired snapshot') });
  assert.equal(refused, undefined);
  assert.match(logs.text, /"reason":"expired"/);
  assert.match((await registry.getSingleMetricAsString('config_sidecar_agent_snapshot_refused_total')), /reason="expired"} 1/);
  assert.deepEqual(await readdir(dir), ['snapshot.key'], 'the refused snapshot is deleted');
});

test('the snapshotter writes each interval while connected, only after a change while not, at once on request, and last on close', async (t) => {
  const dir = await tempDir(t);
  const clock = new ManualClock();
  const key = randomBytes(32);
  const keyCopy = Buffer.from(key);
  const registry = new Registry();
  const state = { connected: true, collected: 0 };
  const snapshotter = new Snapshotter({
    dir,
    key,
    scope: SCOPE,
    interval: 5_000,
    clock,
    logger: createLogger({ component: 'test', level: 'silent', destination: new LogSink() }),
    metrics: createSnapshotMetrics(registry),
    connected: () => state.connected,
    collect: (): SnapshotContent => {
      state.collected += 1;
      return { takenAt: clock.now(), position: { ...POSITION, revision: 40 + state.collected }, values: [], rings: [] };
    },
  });
  const revision = async (): Promise<number> => {
    await snapshotter.settled();
    const opened = openSnapshot(await readFile(join(dir, SNAPSHOT_FILE)), keyCopy, SCOPE);
    assert.ok(opened.ok);
    return opened.header.position.revision;
  };
  snapshotter.start();
  clock.advance(4_999);
  await snapshotter.settled();
  assert.equal(state.collected, 0, 'at most once per interval');
  clock.advance(1);
  assert.equal(await revision(), 41);
  state.connected = false;
  clock.advance(5_000);
  await snapshotter.settled();
  assert.equal(state.collected, 1, 'nothing changed and the stream cannot vouch: no write');
  snapshotter.changed();
  clock.advance(5_000);
  assert.equal(await revision(), 42);
  snapshotter.requestNow();
  assert.equal(await revision(), 43, 'a deletion or revocation does not wait for the interval');
  await snapshotter.close();
  assert.equal(await revision(), 44, 'the last write on shutdown');
  assert.ok(key.every((b) => b === 0), 'the key is zero-filled on close');
  assert.deepEqual((await readdir(dir)).sort(), [SNAPSHOT_FILE]);
  assert.equal((await stat(join(dir, SNAPSHOT_FILE))).mode & 0o777, 0o600);
});

test('the snapshot pages count in the memory budget; /readyz says when it serves from a snapshot', () => {
  const plain = deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: undefined, filesConfigured: true });
  const withSnapshot = deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: undefined, filesConfigured: true, snapshotConfigured: true });
  assert.equal(withSnapshot.cacheMaxBytes, Math.floor((plain.cacheMaxBytes * 4) / 6));
  assert.throws(() => deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: plain.cacheMaxBytes, filesConfigured: true, snapshotConfigured: true }), /with its snapshot's memory-backed pages/);

  const base = { now: 100_000, maxStale: 60_000, appliedRevision: 0, prefetch: { done: true, total: 1, failing: [] }, tokenHealthy: true, everConnected: false };
  const fromSnapshot = agentReadiness({ ...base, streamDownSince: 70_000, snapshot: { takenAt: 70_000, revision: 42, values: 2 } });
  assert.equal(fromSnapshot.ready, true);
  assert.match(fromSnapshot.checks.snapshot?.detail ?? '', /serving 2 value\(s\) from a snapshot at revision 42, current 30s ago \(max-stale 60s\)/);
  const tooOld = agentReadiness({ ...base, now: 140_000, streamDownSince: 70_000, snapshot: { takenAt: 70_000, revision: 42, values: 2 } });
  assert.equal(tooOld.ready, false);
  assert.equal(agentReadiness({ ...base, streamDownSince: 70_000 }).ready, false, 'without a snapshot: not before the first connection');
});

test('a value dropped because access was revoked (403/401/404, a failed tag) asks for a rewrite; a transient failure does not', async () => {
  const clock = new ManualClock();
  let failWith = new AppError('unavailable', 'the server is down');
  let drops = 0;
  const counted: string[] = [];
  const base = { hit() {}, miss() {}, coalesced() {}, stale() {}, eviction() {}, superseded() {}, upstreamFailure: (code: string) => counted.push(code) };
  const cache = new ValueCache({
    loader: () => Promise.reject(failWith),
    clock,
    ttl: 300_000,
    maxStale: 3_600_000,
    maxEntries: 100,
    maxBytes: MiB,
    streamDownSince: () => undefined,
    observer: observeDrops(base, () => (drops += 1)),
  });
  const ref = { namespace: 'production/app', name: 'db-password' };
  await assert.rejects(cache.read(ref, 'prod'), /the server is down/);
  assert.equal(drops, 0);
  failWith = new AppError('permission_denied', 'revoked');
  await assert.rejects(cache.read(ref, 'prod'), /revoked/);
  assert.equal(drops, 1);
  assert.deepEqual(counted, ['unavailable', 'permission_denied'], 'the metrics observer still sees every failure');
});

test('--snapshot-dir must be a volume of its own: one the app containers share is refused, naming both settings', () => {
  const base = { server: 'http://127.0.0.1:8420', serverGrpc: '127.0.0.1:8421', prefix: ['production/app'], socket: '/run/config-sidecar/agent.sock' };
  assert.equal(resolveAgentSettings({ ...base, snapshotDir: '/config-sidecar/snapshot' }).snapshotInterval, 5_000);
  assert.throws(() => resolveAgentSettings({ ...base, snapshotDir: '/run/config-sidecar' }), /--snapshot-dir.*overlaps --socket's directory \(\/run\/config-sidecar\)/);
  assert.throws(() => resolveAgentSettings({ ...base, snapshotDir: '/config-sidecar/files/snap', filesDir: '/config-sidecar/files' }), /overlaps --files-dir/);
  assert.throws(() => resolveAgentSettings({ ...base, snapshotDir: '/s', snapshotInterval: '10ms' }), /--snapshot-interval.*at least 100ms/);
});
