/**
 * The server's half of the freshness protocol over real gRPC streams, with the
 * Watch service in process on a real SQLite control plane (so a test can hold
 * a replay between two log reads and move the clock): where a stream starts
 * for each kind of start, ResyncRequired for every position that cannot be
 * resumed, compaction during a replay, and heartbeats as bookmarks.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createAuthenticator } from '../src/server/auth/authenticator.ts';
import { Policy } from '../src/server/auth/policy.ts';
import type { AuditEntry, ControlPlane } from '../src/server/control-plane.ts';
import { INLINE_LAYERS_MAX_BYTES } from '../src/server/inline-layers.ts';
import { createServerMetrics } from '../src/server/metrics.ts';
import { createRateLimiter } from '../src/server/rate-limiter.ts';
import { createRefusalAudit } from '../src/server/refusal-audit.ts';
import { SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';
import type { LogPage } from '../src/server/store/store.ts';
import { createWatchService } from '../src/server/watch/watch-service.ts';
import type { ManualClock } from '../src/shared/clock.ts';
import { createLogger } from '../src/shared/logger.ts';
import type { LogPosition, StartFrom, WatchEvent } from '../src/shared/watch-proto.ts';
import { openWatch, type WatchHandle } from './helpers/server-process.ts';
import { LogSink, openTestPlane, randomKekBase64, kekOf, tempDir, TEST_ENVIRONMENTS } from './helpers/store-fixtures.ts';

const ROOT_TOKEN = 'root-token-for-resume-tests';
const HEARTBEAT_MS = 1_000;

interface Harness {
  readonly plane: ControlPlane;
  readonly clock: ManualClock;
  readonly address: string;
  watch(request: { prefixes: string[]; start?: StartFrom; sinceRevision?: number }): WatchHandle;
  put(namespace: string, name: string, value: unknown): Promise<number>;
  /** Resolves once every committed event has been offered to every stream (the fan-out runs after the write). */
  delivered(): Promise<void>;
}

/** Serves Watch in process over `plane` (wrapped by `wrap`, e.g. to hold a log read). */
async function serve(t: TestContext, plane: ControlPlane, clock: ManualClock, options: { replayPage?: number; wrap?: (plane: ControlPlane) => ControlPlane } = {}): Promise<Harness> {
  const controlPlane = options.wrap ? options.wrap(plane) : plane;
  const policy = (): Policy => Policy.empty();
  const service = await createWatchService({
    controlPlane,
    authenticator: createAuthenticator({ rootToken: ROOT_TOKEN, policy, clock }),
    policy,
    clock,
    logger: createLogger({ component: 'test', level: 'silent', destination: new LogSink() }),
    metrics: createServerMetrics(),
    heartbeatInterval: HEARTBEAT_MS,
    bound: 1024,
    replayPage: options.replayPage,
    maxStreamsPerPod: 1_000,
    openLimiter: createRateLimiter(0, clock),
    refusals: createRefusalAudit({ write: (entry) => controlPlane.audit(entry), clock }),
  });
  const server = new grpc.Server();
  server.addService(service.definition, service.implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = `127.0.0.1:${port}`;
  const handles: WatchHandle[] = [];
  t.after(() => {
    for (const h of handles) h.close();
    service.close();
    server.forceShutdown();
  });
  return {
    plane,
    clock,
    address,
    watch(request) {
      const handle = openWatch(address, request, ROOT_TOKEN);
      handles.push(handle);
      return handle;
    },
    async put(namespace, name, value) {
      return (await plane.putItem({ namespace, name }, 'base', 'config', Buffer.from(JSON.stringify(value)), 'test')).revision;
    },
    delivered: () => service.delivered(),
  };
}

async function harness(t: TestContext, overrides: { retainEvents?: number; replayPage?: number; wrap?: (plane: ControlPlane) => ControlPlane } = {}) {
  const dir = await tempDir(t);
  const { plane, clock } = await openTestPlane(t, dir, { retainEvents: overrides.retainEvents ?? 100_000 });
  return { dir, ...(await serve(t, plane, clock, overrides)) };
}

/** The position of the event at `revision`, as the agent would have recorded it. */
async function positionAt(plane: ControlPlane, revision: number): Promise<LogPosition> {
  const page = await plane.logPage(revision, 1);
  assert.notEqual(page.afterDigest, undefined, `an event stands at ${revision}`);
  return { storeId: page.storeId, revision, digest: page.afterDigest ?? '' };
}

const after = (position: LogPosition): StartFrom => ({ kind: 'after', position });
const itemRevisions = (events: readonly WatchEvent[]) => events.filter((e) => e.type === 'itemChanged').map((e) => e.revision);

/** Wraps `plane` so the replay's `n`th log read waits for `release` (and says when it got there). */
function holdRead(n: number) {
  let reached!: () => void;
  let release!: () => void;
  const atHold = new Promise<void>((resolve) => (reached = resolve));
  const released = new Promise<void>((resolve) => (release = resolve));
  let reads = 0;
  const wrap = (plane: ControlPlane): ControlPlane =>
    new Proxy(plane, {
      get(target, prop) {
        if (prop === 'logPage') {
          return async (afterRevision: number, limit: number): Promise<LogPage> => {
            reads += 1;
            if (reads === n) {
              reached();
              await released;
            }
            return target.logPage(afterRevision, limit);
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  return { wrap, atHold, release };
}

test('start now: the first message is a Heartbeat at the head with the store id, its digest and the environments', async (t) => {
  const h = await harness(t);
  const rev = await h.put('app/a', 'x', 1);
  const watch = h.watch({ prefixes: ['app'], start: { kind: 'now' } });
  const first = await watch.next();
  const head = await positionAt(h.plane, rev);
  assert.deepEqual(first, {
    type: 'heartbeat',
    revision: rev,
    digest: head.digest,
    currentRevision: rev,
    intervalMs: HEARTBEAT_MS,
    storeId: head.storeId,
    environments: [...TEST_ENVIRONMENTS],
  });
  const live = await h.put('app/a', 'x', 2);
  assert.deepEqual(itemRevisions(await watch.until((e) => e.type === 'itemChanged')), [live]);
});

test('start after a position: every later event is replayed, then live; at revision 0 of a fresh store everything is', async (t) => {
  const h = await harness(t);
  const fresh = h.watch({ prefixes: ['app'], start: after({ storeId: (await h.plane.logHead()).storeId, revision: 0, digest: '' }) });
  assert.deepEqual(await fresh.next(), { type: 'heartbeat', revision: 0, currentRevision: 0, intervalMs: HEARTBEAT_MS, storeId: (await h.plane.logHead()).storeId, environments: [...TEST_ENVIRONMENTS] });
  const revs = [await h.put('app/a', 'x', 1), await h.put('other/b', 'y', 1), await h.put('app/a', 'x', 2)];
  assert.deepEqual(itemRevisions(await fresh.until((e) => e.revision === revs[2])), [revs[0], revs[2]], 'a position at 0 is "applied nothing", not "now"');

  const resumed = h.watch({ prefixes: ['app'], start: after(await positionAt(h.plane, revs[0] as number)) });
  const heartbeat = await resumed.next();
  assert.equal(heartbeat.type, 'heartbeat');
  assert.equal(heartbeat.revision, revs[0]);
  assert.deepEqual(itemRevisions(await resumed.until((e) => e.revision === revs[2])), [revs[2]]);
  const live = await h.put('app/a', 'x', 3);
  assert.deepEqual(itemRevisions(await resumed.until((e) => e.revision === live)), [live]);
});

test('a position that cannot be resumed gets ResyncRequired (never INVALID_ARGUMENT) at the head, then live events', async (t) => {
  const h = await harness(t, { retainEvents: 3 });
  for (let i = 0; i < 6; i++) await h.put('app/a', 'x', i);
  const head = await h.plane.logHead();
  const good = await positionAt(h.plane, 5);
  const cases: Array<[string, StartFrom, RegExp]> = [
    ['another store', after({ ...good, storeId: 'a-store-that-was-restored-away' }), /another store/],
    ['a digest mismatch', after({ ...good, digest: 'ff'.repeat(16) }), /digest mismatch/],
    ['a future revision', after({ ...good, revision: 50 }), /in the future/],
    ['a future since_revision (v1.0)', { kind: 'legacy', sinceRevision: 50 }, /in the future/],
    ['a compacted revision', after({ storeId: good.storeId, revision: 2, digest: '' }), /older than the retained log/],
  ];
  for (const [name, start, reason] of cases) {
    const watch = h.watch({ prefixes: ['app'], start });
    const first = await watch.next();
    assert.equal(first.type, 'resyncRequired', name);
    assert.ok(first.type === 'resyncRequired');
    assert.match(first.reason, reason, name);
    assert.deepEqual(
      { revision: first.revision, digest: first.digest, storeId: first.storeId, environments: first.environments, oldest: first.oldestRevision, current: first.currentRevision },
      { revision: 6, digest: head.afterDigest, storeId: head.storeId, environments: [...TEST_ENVIRONMENTS], oldest: 4, current: 6 },
      `${name}: the resync carries the position the stream continues from`,
    );
    watch.close();
  }
  const watch = h.watch({ prefixes: ['app'], start: cases[0]?.[1] as StartFrom });
  assert.equal((await watch.next()).type, 'resyncRequired');
  const live = await h.put('app/a', 'x', 'live');
  assert.deepEqual(itemRevisions(await watch.until((e) => e.revision === live)), [live], 'the stream continues live after the resync');
});

test('a resume exactly at the compaction boundary is verified by the kept digest and replays; one before it resyncs', async (t) => {
  const h = await harness(t, { retainEvents: 3 });
  const digests: string[] = [];
  for (let i = 1; i <= 3; i++) {
    await h.put('app/a', 'x', i);
    digests.push((await positionAt(h.plane, i)).digest);
  }
  for (let i = 4; i <= 6; i++) await h.put('app/a', 'x', i); // compacts through 3
  assert.equal((await h.plane.logHead()).compactedThrough, 3);
  const storeId = (await h.plane.logHead()).storeId;
  const atBoundary = h.watch({ prefixes: ['app'], start: after({ storeId, revision: 3, digest: digests[2] as string }) });
  assert.equal((await atBoundary.next()).type, 'heartbeat');
  assert.deepEqual(itemRevisions(await atBoundary.until((e) => e.revision === 6)), [4, 5, 6]);
  const wrongAtBoundary = h.watch({ prefixes: ['app'], start: after({ storeId, revision: 3, digest: digests[1] as string }) });
  assert.equal((await wrongAtBoundary.next()).type, 'resyncRequired', 'the boundary digest is checked too');
  const before = h.watch({ prefixes: ['app'], start: after({ storeId, revision: 2, digest: digests[1] as string }) });
  assert.equal((await before.next()).type, 'resyncRequired');
});

test('compaction during the replay: the page that shows the next revision compacted sends ResyncRequired, never a silent gap (finding 4)', async (t) => {
  const hold = holdRead(2);
  const h = await harness(t, { retainEvents: 5, replayPage: 2, wrap: hold.wrap });
  for (let i = 1; i <= 6; i++) await h.put('app/a', 'x', i); // revisions 1..6, compacted through 1
  const watch = h.watch({ prefixes: ['app'], start: after(await positionAt(h.plane, 2)) });
  assert.equal((await watch.next()).type, 'heartbeat');
  assert.deepEqual([(await watch.next()).revision, (await watch.next()).revision], [3, 4], 'the first page is sent');
  await hold.atHold;
  // While the stream waits for its second page, retention compacts what it still needs (5 and 6).
  for (let i = 7; i <= 11; i++) await h.put('app/a', 'x', i);
  assert.equal((await h.plane.logHead()).compactedThrough, 6);
  hold.release();
  const next = await watch.next();
  assert.equal(next.type, 'resyncRequired', `got ${next.type} ${next.revision} instead`);
  assert.ok(next.type === 'resyncRequired');
  assert.match(next.reason, /compacted during the replay/);
  assert.equal(next.revision, 11);
  const live = await h.put('app/a', 'x', 12);
  assert.deepEqual(itemRevisions(await watch.until((e) => e.revision === live)), [live]);
});

test('heartbeats are bookmarks: the highest revision the stream delivered or filtered out, with its digest', async (t) => {
  const h = await harness(t);
  const watch = h.watch({ prefixes: ['quiet'], start: { kind: 'now' } });
  assert.equal((await watch.next()).type, 'heartbeat');
  const busy = [await h.put('busy/a', 'x', 1), await h.put('busy/a', 'x', 2)];
  // The bookmark is what the stream has been offered: wait for the fan-out, which runs after the writes.
  await h.delivered();
  h.clock.advance(HEARTBEAT_MS);
  const beat = await watch.next();
  assert.equal(beat.type, 'heartbeat');
  const high = await positionAt(h.plane, busy[1] as number);
  assert.deepEqual([beat.revision, beat.digest, beat.type === 'heartbeat' && beat.storeId], [high.revision, high.digest, high.storeId]);
  // The bookmark resumes without a resync and replays nothing (the prefix was quiet).
  const resumed = h.watch({ prefixes: ['quiet'], start: after(high) });
  assert.equal((await resumed.next()).type, 'heartbeat');
  const live = await h.put('quiet/a', 'x', 1);
  assert.deepEqual(itemRevisions(await resumed.until((e) => e.revision === live)), [live]);
});

test('a backup copied back into the data dir reuses revisions: the digest tells the events apart and the resume resyncs', async (t) => {
  const dir = await tempDir(t);
  const kek = randomKekBase64();
  const first = await openTestPlane(t, dir, { kek: kekOf(kek) });
  const put = (plane: ControlPlane, v: number) => plane.putItem({ namespace: 'app/a', name: 'x' }, 'base', 'config', Buffer.from(String(v)), 'test');
  for (let i = 1; i <= 3; i++) await put(first.plane, i);
  const backup = join(await tempDir(t), 'backup.db');
  await first.plane.backup(backup);
  for (let i = 4; i <= 5; i++) await put(first.plane, i);
  const applied = await positionAt(first.plane, 5);
  await first.plane.close();

  await copyFile(backup, join(dir, SQLITE_FILE_NAME));
  const again = await openTestPlane(t, dir, { kek: kekOf(kek) });
  for (let i = 4; i <= 5; i++) await put(again.plane, i * 10);
  const reused = await positionAt(again.plane, 5);
  assert.equal(reused.storeId, applied.storeId, 'a copied file keeps the store id: only the digest can tell');
  assert.notEqual(reused.digest, applied.digest);
  const h = await serve(t, again.plane, again.clock);
  const watch = h.watch({ prefixes: ['app'], start: after(applied) });
  const first0 = await watch.next();
  assert.equal(first0.type, 'resyncRequired');
  assert.ok(first0.type === 'resyncRequired');
  assert.match(first0.reason, /digest mismatch/);
});



/** Records the audit entries the Watch service writes. */
function recordAudit(entries: AuditEntry[]) {
  return (plane: ControlPlane): ControlPlane =>
    new Proxy(plane, {
      get(target, prop) {
        if (prop === 'audit') {
          return async (entry: AuditEntry) => {
            entries.push(entry);
            await target.audit(entry);
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
}

test('change events carry every live layer of the item inline under 64 KiB, none above it; secret deliveries are audited once per stream', async (t) => {
  const audits: AuditEntry[] = [];
  const h = await harness(t, { wrap: recordAudit(audits) });
  const ref = { namespace: 'app/a', name: 'db' };
  await h.plane.putItem(ref, 'base', 'secret', Buffer.from('base-secret'), 'test');
  const watch = h.watch({ prefixes: ['app'], start: { kind: 'now' } });
  assert.equal((await watch.next()).type, 'heartbeat');
  const prod = await h.plane.putItem(ref, 'prod', 'secret', Buffer.from('prod-secret'), 'test');
  const changed = (await watch.until((e) => e.type === 'itemChanged')).at(-1);
  assert.ok(changed?.type === 'itemChanged');
  const envelope = await h.plane.getEnvelope(ref, 'prod');
  const base = await h.plane.getEnvelope(ref, 'base');
  assert.deepEqual(
    changed.layers,
    [
      { ...(base.layers[0] as object), revision: 1 },
      { ...(envelope.layers[0] as object), revision: prod.revision },
    ],
    'every env layer, least specific first, exactly as the envelope endpoint seals it',
  );

  // Over the bound: the event says "refetch" (no layers) and is still delivered.
  const big = await h.plane.putItem({ namespace: 'app/a', name: 'big' }, 'base', 'secret', Buffer.alloc(INLINE_LAYERS_MAX_BYTES + 1, 7), 'test');
  const bigEvent = (await watch.until((e) => e.revision === big.revision)).at(-1);
  assert.ok(bigEvent?.type === 'itemChanged');
  assert.equal(bigEvent.layers, undefined);

  const inline = () => audits.filter((a) => a.action === 'envelope');
  // A replay carries them too.
  const replay = h.watch({ prefixes: ['app'], start: after(await positionAt(h.plane, 1)) });
  const replayed = (await replay.until((e) => e.revision === big.revision)).filter((e) => e.type === 'itemChanged');
  assert.deepEqual(replayed.map((e) => e.type === 'itemChanged' && e.layers?.length), [2, undefined]);
  replay.close();
  // The server notices the cancel asynchronously; its aggregate row says the stream is gone.
  await waitFor(() => inline().length === 1);

  // Replayed after the item changed again, an event goes without layers (they are not its state): the agent refetches.
  const later = await h.plane.putItem(ref, 'prod', 'secret', Buffer.from('prod-secret-2'), 'test');
  const stale = h.watch({ prefixes: ['app'], start: after(await positionAt(h.plane, 1)) });
  const staleEvents = (await stale.until((e) => e.revision === later.revision)).filter((e) => e.type === 'itemChanged');
  assert.deepEqual(
    staleEvents.map((e) => [e.revision, e.type === 'itemChanged' && e.layers?.length]),
    [
      [prod.revision, undefined],
      [big.revision, undefined],
      [later.revision, 2],
    ],
  );
  stale.close();
  await waitFor(() => inline().length === 2);

  const deleted = await h.plane.deleteItem(ref, undefined, 'test');
  const gone = (await watch.until((e) => e.revision === deleted.revision)).at(-1);
  assert.ok(gone?.type === 'itemDeleted');
  assert.deepEqual(gone.layers, [], 'a deleted item has no live layers left');
  watch.close();

  await waitFor(() => inline().length === 3);
  assert.deepEqual(
    inline().map((a) => [a.subject, a.target, a.detail?.replace(/stream \d+/, 'stream N')]).sort(),
    [
      ['root', 'app', 'watch stream N: 1 sealed secret value(s) delivered inline'],
      ['root', 'app', 'watch stream N: 1 sealed secret value(s) delivered inline'],
      ['root', 'app', 'watch stream N: 2 sealed secret value(s) delivered inline'],
    ],
    'one aggregate row per stream, counting events that carried a sealed secret (not the one over the bound, not the delete); never a value',
  );
});

/** Polls a condition the test cannot await directly (an audit write after a stream ended), with a deadline. */
async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
}
