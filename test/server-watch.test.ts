import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GrpcStatus } from '../src/shared/errors.ts';
import type { WatchEvent } from '../src/shared/watch-proto.ts';
import { http, metricValue, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const WATCH_BUFFER = 8;
const RETAIN_EVENTS = 50;
let server: ServerProcess;
before(async () => {
  server = await startServerProcess({ args: ['--watch-buffer', String(WATCH_BUFFER), '--retain-events', String(RETAIN_EVENTS), '--rate-limit', '0'] });
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
});

const put = async (path: string, value: unknown, kind = 'config') => {
  const res = await http(server.httpUrl, 'PUT', `/v1/items/${path}`, { token: server.rootToken, body: { kind, value } });
  assert.equal(res.status, 200, res.text);
  return res.json as { version: number; revision: number };
};

test('a watch sees writes, deletes and a rotation in revision order, and resumes with exactly the missed events', async () => {
  const watch = openWatch(server.grpcAddress, { prefixes: ['team-a/svc'] }, server.rootToken);
  const first = await watch.next();
  assert.equal(first.type, 'heartbeat', 'the first message is a heartbeat');
  const startRevision = first.type === 'heartbeat' ? first.currentRevision : -1;

  const w1 = await put('team-a/svc/limits', { rps: 10 });
  await put('team-a/svc-other/limits', { rps: 1 }); // not under the prefix (whole segments)
  const w2 = await put('team-a/svc/inner/flag', true);
  const del = await http(server.httpUrl, 'DELETE', '/v1/items/team-a/svc/limits', { token: server.rootToken });
  assert.equal(del.status, 200, del.text);
  const rot = await http(server.httpUrl, 'POST', '/v1/rotate/team-a/svc', { token: server.rootToken });
  assert.equal(rot.status, 200, rot.text);

  const events = (await watch.until((e) => e.type === 'keyRotated')).filter((e) => e.type !== 'heartbeat');
  assert.deepEqual(
    events.map((e) => [e.type, e.revision]),
    [
      ['itemChanged', w1.revision],
      ['itemChanged', w2.revision],
      ['itemDeleted', del.json.revision],
      ['keyRotated', rot.json.revision],
    ],
  );
  assert.ok(events.every((e, i) => i === 0 || e.revision > (events[i - 1] as WatchEvent).revision));
  assert.ok(w1.revision > startRevision);
  watch.close();

  // Missed while disconnected: resume after the rotation.
  const lastApplied = rot.json.revision as number;
  const m1 = await put('team-a/svc/limits', { rps: 20 });
  await put('elsewhere/app/x', 1);
  const m2 = await put('team-a/svc/limits', { rps: 30 });
  const resumed = openWatch(server.grpcAddress, { prefixes: ['team-a/svc'], sinceRevision: lastApplied }, server.rootToken);
  const hb = await resumed.next();
  assert.equal(hb.type, 'heartbeat');
  // Heartbeats come every second of real time; only the item events matter here.
  const replay = (await resumed.until((e) => e.revision === m2.revision && e.type !== 'heartbeat')).filter((e) => e.type !== 'heartbeat');
  assert.deepEqual(replay.map((e) => [e.type, e.revision]), [['itemChanged', m1.revision], ['itemChanged', m2.revision]]);
  // then live, without gap or duplicate
  const live = await put('team-a/svc/limits', { rps: 40 });
  const next = (await resumed.until((e) => e.type !== 'heartbeat')).at(-1) as WatchEvent;
  assert.match(next.digest ?? '', /^[0-9a-f]{32}$/, 'every event carries its digest');
  assert.ok(next.type === 'itemChanged' && next.layers?.length === 1, 'the sealed value comes inline');
  const { layers: _layers, ...rest } = next;
  void _layers;
  assert.deepEqual(rest, { type: 'itemChanged', revision: live.revision, digest: next.digest, namespace: 'team-a/svc', name: 'limits', kind: 'config', version: live.version, env: 'base' });
  resumed.close();
  await server.waitForLog((l) => l.msg === 'watch stream ended' && l.reason === 'cancelled' && l.stream !== undefined && server.logs.filter((x) => x.msg === 'watch stream ended' && x.reason === 'cancelled').length >= 2);
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_watch_streams'), 0, 'cancelled streams are released');
});

test('a revision older than the retained log gets ResyncRequired, then live events', async () => {
  for (let i = 0; i < RETAIN_EVENTS + 5; i++) await put('compact/app/counter', i);
  const watch = openWatch(server.grpcAddress, { prefixes: ['compact'], sinceRevision: 1 }, server.rootToken);
  const resync = await watch.next();
  assert.equal(resync.type, 'resyncRequired', 'the first message says the position cannot be resumed');
  const live = await put('compact/app/counter', 'after');
  const next = (await watch.until((e) => e.type === 'itemChanged')).at(-1) as WatchEvent;
  assert.equal(next.revision, live.revision);
  watch.close();
});

test('bad watch requests: no prefixes, a bad prefix; the server keeps serving', async () => {
  const none = openWatch(server.grpcAddress, { prefixes: [] }, server.rootToken);
  assert.equal((await none.status).code, GrpcStatus.INVALID_ARGUMENT);
  const bad = openWatch(server.grpcAddress, { prefixes: ['../etc'] }, server.rootToken);
  assert.equal((await bad.status).code, GrpcStatus.INVALID_ARGUMENT);
  const anon = openWatch(server.grpcAddress, { prefixes: ['misc'] }, undefined);
  assert.equal((await anon.status).code, GrpcStatus.UNAUTHENTICATED);
  const ok = openWatch(server.grpcAddress, { prefixes: ['misc'] }, server.rootToken);
  assert.equal((await ok.next()).type, 'heartbeat');
  ok.close();
});

test('a reader that stops reading is ended with RESOURCE_EXHAUSTED and the queue never passes its bound', async () => {
  const slow = openWatch(server.grpcAddress, { prefixes: ['slow'] }, server.rootToken, { stallAfterFirst: true });
  assert.equal((await slow.next()).type, 'heartbeat');
  // Fat events fill the HTTP/2 flow-control window quickly.
  const namespace = Array.from({ length: 8 }, (_, i) => `s${i}`.padEnd(60, 'x')).join('/').replace(/^s0x*/, 'slow');
  const ended = () => server.logs.some((l) => l.msg === 'watch stream ended' && l.reason === 'slow');
  let writes = 0;
  while (!ended() && writes < 5000) {
    await put(`${namespace}/item`, writes++);
  }
  assert.ok(ended(), `the slow watcher was ended after ${writes} writes`);
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_watch_buffer_high_water'), WATCH_BUFFER);
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_watch_streams_ended_total', 'reason="slow"'), 1);
  // When the reader finally reads, it gets what was in flight and then the status.
  slow.call.resume();
  const status = await slow.status;
  assert.equal(status.code, GrpcStatus.RESOURCE_EXHAUSTED);
  // Other watchers and requests are unaffected.
  const fresh = openWatch(server.grpcAddress, { prefixes: ['slow'] }, server.rootToken);
  assert.equal((await fresh.next()).type, 'heartbeat');
  fresh.close();
});

test('heartbeats and the key-age policy run on the server clock (moved by the test hook)', async () => {
  const watch = openWatch(server.grpcAddress, { prefixes: ['aging'] }, server.rootToken);
  assert.equal((await watch.next()).type, 'heartbeat');
  const written = await put('aging/app/flag', true);
  assert.equal((await watch.until((e) => e.type !== 'heartbeat')).at(-1)?.revision, written.revision);
  await http(server.adminUrl, 'POST', '/test/clock/advance?ms=10000');
  const heartbeat = await watch.next();
  assert.equal(heartbeat.type, 'heartbeat');
  assert.ok(heartbeat.type === 'heartbeat' && heartbeat.currentRevision >= written.revision);
  await http(server.adminUrl, 'POST', `/test/clock/advance?ms=${91 * 86_400_000}`);
  const rotated = (await watch.until((e) => e.type === 'keyRotated')).at(-1);
  assert.equal(rotated?.type === 'keyRotated' ? rotated.namespace : undefined, 'aging/app');
  // The metric counts once the policy run has finished every due namespace, which may be after this event arrived.
  await server.waitForLog((l) => l.msg === 'data key rotated by age policy' && l.namespace === 'aging/app');
  assert.ok(((await metricValue(server.adminUrl, 'config_sidecar_server_key_rotations_total', 'trigger="policy"')) ?? 0) >= 1);
  watch.close();
});

test('HTTP/2 keepalive pings from an agent every 100 ms are accepted: the stream stays up across heartbeats (1 s by default)', async () => {
  const channelOptions = { 'grpc.keepalive_time_ms': 100, 'grpc.keepalive_timeout_ms': 1_000, 'grpc.keepalive_permit_without_calls': 1 };
  const watch = openWatch(server.grpcAddress, { prefixes: ['pinged'], start: { kind: 'now' } }, server.rootToken, { channelOptions });
  const first = await watch.next();
  assert.equal(first.type === 'heartbeat' && first.intervalMs, 1_000);
  // Two more real heartbeats: well over ten pings later the server has not sent GOAWAY (too_many_pings).
  assert.equal((await watch.next(5_000)).type, 'heartbeat');
  assert.equal((await watch.next(5_000)).type, 'heartbeat');
  watch.close();
});
