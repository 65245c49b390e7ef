/**
 * Finding 4 of issue 11 with real processes: a server keeping few events
 * (`--retain-events`), an agent whose gRPC path goes through a TCP proxy
 * (test/helpers/tcp-proxy.ts), and compaction past the agent's position.
 * Waits on `config_sidecar_agent_stream_connected`, the resync counter
 * (`config_sidecar_agent_invalidations_total{type="resyncRequired"}`) and the
 * applied revision, never on sleeps.
 *
 * Holding the server's replay between two pages from outside is not possible:
 * a replay page is 500 events (REPLAY_PAGE, not a flag) and the only brake
 * is HTTP/2 flow control, so it would take hundreds of retained events of
 * ~64 KiB to stop a replay mid-way. The mid-replay check itself is covered
 * in-process (test/server-watch-resume.test.ts, a small replayPage). Here:
 * compaction while the agent is away, and compaction during its reconnect
 * under a write burst, checking end to end that once the agent has applied
 * revision A it never serves, unmarked, a value older than the newest write
 * at or before A.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { HEADERS } from '../src/shared/protocol.ts';
import { metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { startTcpProxy, waitForMetric, type TcpProxy } from './helpers/tcp-proxy.ts';

const KEY = 'production/compact/key';
/** Written once while the agent is away, then compacted by writes to KEY: a silent gap leaves it old. */
const OTHER = 'production/compact/other';
const RETAIN = 3;
const STREAM_CONNECTED = 'config_sidecar_agent_stream_connected';
const RESYNCS = ['config_sidecar_agent_invalidations_total', 'type="resyncRequired"'] as const;
const APPLIED = 'config_sidecar_agent_applied_revision';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
});

interface Stack {
  server: ServerProcess;
  proxy: TcpProxy;
  agent: AgentProcess;
  /** Revision → the write (the value is `v<index>`). */
  writes: Map<number, { key: string; i: number }>;
  write(i: number, key?: string): Promise<void>;
}

async function stack(): Promise<Stack> {
  const server = await startServerProcess({ args: ['--heartbeat-interval', '1s', '--retain-events', String(RETAIN)] });
  cleanups.push(async () => {
    await server.stop();
    await removeDir(server.dataDir);
  });
  const proxy = await startTcpProxy(server.grpcAddress);
  cleanups.push(() => proxy.close());
  const writes = new Map<number, { key: string; i: number }>();
  const write = async (i: number, key = KEY): Promise<void> => {
    const { revision } = await putItem(server, key, { kind: 'secret', value: `v${i}` });
    writes.set(revision, { key, i });
  };
  await write(1);
  await write(1, OTHER);
  const agent = await startAgentProcess({ ...server, grpcAddress: proxy.address }, { prefixes: ['production'], prefetch: [KEY, OTHER], args: ['--cache-ttl', '1h'] });
  cleanups.push(() => agent.stop());
  await waitReady(agent.adminUrl);
  await waitForMetric(() => metricValue(agent.adminUrl, STREAM_CONNECTED), (v) => v === 1, 'the stream to connect');
  return { server, proxy, agent, writes, write };
}

const resyncs = (agent: AgentProcess) => async () => (await metricValue(agent.adminUrl, ...RESYNCS)) ?? 0;
const index = (value: unknown): number => Number(String(value).slice(1));

/** The newest write of `key` at or before revision `applied`. */
function newestAt(writes: Stack['writes'], key: string, applied: number): number {
  let best = 0;
  for (const [revision, w] of writes) if (w.key === key && revision <= applied && w.i > best) best = w.i;
  return best;
}

/** Reads once; an unmarked value must be no older than the newest write at or before the revision applied before the read. */
async function checkedRead(s: Stack, key = KEY, options: { busy?: boolean } = {}): Promise<{ i: number; stale: boolean } | undefined> {
  const applied = (await metricValue(s.agent.adminUrl, APPLIED)) ?? 0;
  const read = await socketGet(s.agent.socketPath, `/v1/items/${key}`);
  // Under a write burst a fill can lose the race with the next write every time: a clear "retry", never an old value.
  if (options.busy && read.status === 503 && read.json?.error?.code === 'unavailable') return undefined;
  assert.equal(read.status, 200, `read answered ${read.status}: ${JSON.stringify(read.json)}`);
  const i = index(read.json.value);
  const stale = read.headers[HEADERS.stale] !== undefined;
  const newest = newestAt(s.writes, key, applied);
  if (!stale) assert.ok(i >= newest, `${key}: served v${i} unmarked after applying revision ${applied}, which has v${newest}`);
  return { i, stale };
}

test('finding 4: compaction past the agent\'s position while it is away: it resyncs and serves the newest value', async () => {
  const s = await stack();
  assert.deepEqual(await checkedRead(s), { i: 1, stale: false });
  assert.deepEqual(await checkedRead(s, OTHER), { i: 1, stale: false });
  const before = await resyncs(s.agent)();

  s.proxy.cut();
  await waitForMetric(() => metricValue(s.agent.adminUrl, STREAM_CONNECTED), (v) => v === 0, 'the agent to notice the cut');
  // OTHER changes once, then more writes than the server retains compact that event away with the agent's position.
  await s.write(2, OTHER);
  for (let i = 2; i <= RETAIN * 3 + 2; i++) await s.write(i);
  const last = RETAIN * 3 + 2;
  const away = await checkedRead(s);
  assert.ok(away && (away.stale || away.i === last), 'while the stream is down an old value is stale-marked');

  s.proxy.restore();
  await waitForMetric(() => metricValue(s.agent.adminUrl, STREAM_CONNECTED), (v) => v === 1, 'the stream to come back');
  const lastRevision = Math.max(...s.writes.keys());
  await waitForMetric(() => metricValue(s.agent.adminUrl, APPLIED), (v) => (v ?? 0) >= lastRevision, `the agent to apply revision ${lastRevision}`);
  const back = await checkedRead(s);
  assert.deepEqual(back, { i: last, stale: false }, 'the newest value, fresh, once the stream is back');
  const other = await checkedRead(s, OTHER);
  assert.deepEqual(other, { i: 2, stale: false }, 'the change whose event was compacted away is served, not skipped');
  assert.ok((await resyncs(s.agent)()) > before, 'the resume was answered with ResyncRequired');
});

test('finding 4: compaction during the reconnect under a write burst: never an older value, converges on the newest', { timeout: 90_000 }, async () => {
  const s = await stack();
  const before = await resyncs(s.agent)();
  s.proxy.cut();
  await waitForMetric(() => metricValue(s.agent.adminUrl, STREAM_CONNECTED), (v) => v === 0, 'the agent to notice the cut');
  for (let i = 2; i <= RETAIN + 3; i++) await s.write(i);
  await s.write(2, OTHER);

  // The burst runs while the agent reconnects and resumes: each write compacts the log further,
  // so the revision the agent resumes from (or the one its replay reaches) may go while it is served.
  const BURST = 120;
  const BURST_MS = 20_000;
  let i = RETAIN + 3;
  const started = Date.now();
  let done = false;
  const burst = (async () => {
    try {
      while (i < RETAIN + 3 + BURST && Date.now() - started < BURST_MS) {
        await s.write(++i);
        // A few changes of OTHER early in the burst, each compacted away by the writes after it.
        if (i % 10 === 0 && i < 40) await s.write(i, OTHER);
      }
    } finally {
      done = true;
    }
  })();
  s.proxy.restore();
  let reads = 0;
  let busy = 0;
  try {
    while (!done) {
      for (const key of [KEY, OTHER]) {
        if (await checkedRead(s, key, { busy: true })) reads++;
        else busy++;
      }
    }
  } finally {
    i = Number.MAX_SAFE_INTEGER; // a failed read ends the burst before the processes are stopped
    await burst.catch(() => {});
  }
  const last = newestAt(s.writes, KEY, Number.MAX_SAFE_INTEGER);
  await waitForMetric(() => metricValue(s.agent.adminUrl, STREAM_CONNECTED), (v) => v === 1, 'the stream to come back');
  const lastRevision = Math.max(...s.writes.keys());
  await waitForMetric(() => metricValue(s.agent.adminUrl, APPLIED), (v) => (v ?? 0) >= lastRevision, `the agent to apply revision ${lastRevision}`);
  assert.deepEqual(await checkedRead(s), { i: last, stale: false }, `the newest value (v${last}) once the burst is applied`);
  const otherLast = newestAt(s.writes, OTHER, lastRevision);
  assert.deepEqual(await checkedRead(s, OTHER), { i: otherLast, stale: false }, `OTHER converges on v${otherLast}`);
  assert.ok((await resyncs(s.agent)()) > before, 'the resume was answered with ResyncRequired');
  assert.ok(reads > busy, `${reads} reads checked during the burst, ${busy} answered 503 retry`);
});
