/**
 * Control plane at fleet scale (issue 21): one server replica (SQLite) pinned
 * to the SUT core; agents' Watch streams held by separate load processes on
 * the load core, one HTTP/2 connection per agent; the writer is this process.
 * For 1k, 5k and 10k agents (added in steps): write acknowledgement (against
 * the same server with no agents), delivery lag of each write to every
 * stream (from sending the write), missing deliveries, server RSS per agent
 * and server CPU per delivered event. Then two replicas on one PostgreSQL
 * with the agents split across them, writes to one: every agent on both
 * replicas must get every write.
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { addAgents, AGENTS_PER_PROCESS, FLEET_SERVER_FLAGS, stopFleets, tell, type Fleet } from '../lib/agent-fleet.ts';
import { cpuSeconds, LOAD_CORE, rssBytes, SUT_CORE } from '../lib/proc.ts';
import { keyName, metric, ServerClient, startServer, valueFor, type ServerHandle } from '../lib/stack.ts';
import { median, percentile } from '../lib/stats.ts';
import { VALUE_BYTES, type Context } from '../lib/context.ts';
import type { Row, ScenarioResult, TargetCheck } from '../lib/types.ts';
import { startThrowawayPostgres, findPostgresBin } from '../../test/helpers/store-postgres.ts';

const NAMESPACE = 'bench/cp';
const DELIVERY_TIMEOUT_MS = 10_000;
/** Idle time over which the streams' steady cost (heartbeats) is measured (shorter in --smoke). */
const IDLE_SAMPLE_MS = 3_000;
const SMOKE_IDLE_SAMPLE_MS = 300;
/** Pause between writes, so each is measured on its own. */
const WRITE_GAP_MS = 200;

interface WriteResult {
  readonly ackMs: number;
  readonly lagsMs: number[];
  /** The lags of each fleet's agents (same order as `fleets`). */
  readonly perFleet: number[][];
  readonly missing: number;
}

/** One write through `writer`, delivered to every agent of `fleets`: ack time, lag per stream, missing. */
async function writeOnce(client: ServerClient, fleets: readonly Fleet[], k: number): Promise<WriteResult> {
  const sendNs = process.hrtime.bigint();
  const { revision } = await client.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, k, VALUE_BYTES));
  const ackMs = Number(process.hrtime.bigint() - sendNs) / 1e6;
  const replies = fleets.map((f) => f.processes.map((p) => p.next('delivered')));
  for (const p of fleets.flatMap((f) => f.processes)) tell(p, { type: 'expect', revision, sendNs: sendNs.toString(), timeoutMs: DELIVERY_TIMEOUT_MS });
  const lagsMs: number[] = [];
  const perFleet: number[][] = [];
  let missing = 0;
  for (const fleetReplies of replies) {
    const mine: number[] = [];
    for (const reply of await Promise.all(fleetReplies)) {
      if (reply.type !== 'delivered') continue;
      for (const lag of reply.lagsMs) mine.push(lag);
      missing += reply.missing;
    }
    perFleet.push(mine);
    for (const lag of mine) lagsMs.push(lag);
  }
  return { ackMs, lagsMs, perFleet, missing };
}

async function ackWithoutAgents(client: ServerClient, writes: number, from: number): Promise<number[]> {
  const acks: number[] = [];
  for (let k = 0; k < writes; k++) {
    const sendNs = process.hrtime.bigint();
    await client.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, from + k, VALUE_BYTES));
    acks.push(Number(process.hrtime.bigint() - sendNs) / 1e6);
    await sleep(WRITE_GAP_MS);
  }
  return acks;
}

interface Level {
  readonly agents: number;
  readonly acksMs: number[];
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly missing: number;
  readonly rssMiB: number;
  readonly kibPerAgent: number;
  readonly idleCpuPct: number;
  /** The server's own time from commit to the last stream offered the event (its metric), mean per write. */
  readonly serverFanOutMs: number;
  readonly cpuUsPerDelivery: number;
}

/** The server's fan-out histogram's sum (seconds) and count. */
async function fanOutSeconds(server: ServerHandle): Promise<{ sum: number; count: number }> {
  const name = 'config_sidecar_server_watch_fanout_duration_seconds';
  return { sum: await metric(server.adminUrl, `${name}_sum`), count: await metric(server.adminUrl, `${name}_count`) };
}

async function measureLevel(client: ServerClient, server: ServerHandle, fleets: readonly Fleet[], agents: number, writes: number, idleRss: number, from: number, idleSampleMs: number): Promise<Level> {
  const pid = server.child.pid;
  const rss = rssBytes(pid);
  const idleCpu0 = cpuSeconds(pid);
  const idle0 = Date.now();
  await sleep(idleSampleMs);
  const idleCpuPerMs = (cpuSeconds(pid) - idleCpu0) / (Date.now() - idle0);
  const acks: number[] = [];
  const lags: number[] = [];
  let missing = 0;
  const fanOut0 = await fanOutSeconds(server);
  const cpu0 = cpuSeconds(pid);
  const t0 = Date.now();
  for (let k = 0; k < writes; k++) {
    const r = await writeOnce(client, fleets, from + k);
    acks.push(r.ackMs);
    for (const lag of r.lagsMs) lags.push(lag);
    missing += r.missing;
    await sleep(WRITE_GAP_MS);
  }
  // CPU over the writes, less the streams' steady cost over the same time (heartbeats); on a
  // machine so loaded that the server could not keep its idle rate, the difference is meaningless.
  const busyCpu = cpuSeconds(pid) - cpu0 - idleCpuPerMs * (Date.now() - t0);
  const fanOut1 = await fanOutSeconds(server);
  const serverFanOutMs = ((fanOut1.sum - fanOut0.sum) / Math.max(1, fanOut1.count - fanOut0.count)) * 1000;
  return {
    agents,
    acksMs: acks,
    p50Ms: percentile(lags, 50),
    p99Ms: percentile(lags, 99),
    maxMs: percentile(lags, 100),
    missing,
    rssMiB: rss / 2 ** 20,
    kibPerAgent: (rss - idleRss) / 1024 / agents,
    idleCpuPct: idleCpuPerMs * 1000 * 100,
    serverFanOutMs,
    cpuUsPerDelivery: busyCpu > 0 ? (busyCpu * 1e6) / Math.max(1, lags.length) : Number.NaN,
  };
}


export async function controlPlane(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const levels = ctx.profile.controlPlaneAgents;
  const writes = ctx.profile.controlPlaneWrites;
  const load0 = loadavg()[0] ?? 0;
  const rows: Row[] = [];
  const notes: string[] = [];
  const targets: TargetCheck[] = [];
  const results: Level[] = [];
  let baseline: number[] = [];
  const fleets: Fleet[] = [];
  const server = await startServer(SUT_CORE, FLEET_SERVER_FLAGS);
  const client = new ServerClient(server);
  try {
    await client.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, 0, VALUE_BYTES));
    // Warm-up, then the reference: the same writes with nobody watching.
    await ackWithoutAgents(client, 3, 1);
    baseline = await ackWithoutAgents(client, writes, 10);
    const idleRss = rssBytes(server.child.pid);
    let connected = 0;
    let from = 1_000;
    for (const agents of levels) {
      if (ctx.secondsLeft() < 60) {
        notes.push(`${agents} agents not measured: the suite's time budget was nearly used up.`);
        break;
      }
      await addAgents(ctx.log, fleets, server, NAMESPACE, agents - connected);
      connected = agents;
      const level = await measureLevel(client, server, fleets, agents, writes, idleRss, from, ctx.profile.name === 'smoke' ? SMOKE_IDLE_SAMPLE_MS : IDLE_SAMPLE_MS);
      from += writes;
      results.push(level);
      ctx.log(
        `${agents} agents: ack median ${median(level.acksMs).toFixed(1)} ms (none: ${median(baseline).toFixed(1)}), delivery p50 ${level.p50Ms.toFixed(1)} p99 ${level.p99Ms.toFixed(1)} ms (server fan-out ${level.serverFanOutMs.toFixed(1)} ms), missing ${level.missing}, RSS ${level.rssMiB.toFixed(0)} MiB (${level.kibPerAgent.toFixed(1)} KiB/agent), ${level.cpuUsPerDelivery.toFixed(1)} µs CPU/delivery, idle ${level.idleCpuPct.toFixed(1)} % CPU`,
      );
    }
    const idleMiB = idleRss / 2 ** 20;
    rows.push({ system: 'server, 0 agents', metric: 'write acknowledged', unit: 'ms', values: baseline, better: 'lower' });
    for (const l of results) {
      const who = `server, ${l.agents} agents`;
      rows.push(
        { system: who, metric: 'write acknowledged', unit: 'ms', values: l.acksMs, better: 'lower' },
        { system: who, metric: 'delivery to every stream p50', unit: 'ms', values: [l.p50Ms], better: 'lower' },
        { system: who, metric: 'delivery to every stream p99', unit: 'ms', values: [l.p99Ms], better: 'lower' },
        { system: who, metric: 'server fan-out (commit → last stream offered), mean', unit: 'ms', values: [l.serverFanOutMs], better: 'lower' },
        { system: who, metric: 'missing deliveries', unit: 'count', values: [l.missing], better: 'lower' },
        { system: who, metric: 'RSS', unit: 'MiB', values: [l.rssMiB], better: 'lower', note: `idle ${idleMiB.toFixed(0)} MiB` },
        { system: who, metric: 'RSS per agent', unit: 'KiB', values: [l.kibPerAgent], better: 'lower' },
        ...(Number.isNaN(l.cpuUsPerDelivery) ? [] : [{ system: who, metric: 'CPU per delivered event', unit: 'µs', values: [l.cpuUsPerDelivery], better: 'lower' as const }]),
        { system: who, metric: 'CPU with streams idle (heartbeats)', unit: '%', values: [l.idleCpuPct], better: 'lower' },
      );
    }
    const at5k = results.find((l) => l.agents === 5_000) ?? results[results.length - 1];
    if (at5k) {
      const ratio = median(at5k.acksMs) / median(baseline);
      targets.push(
        { target: `ack with ${at5k.agents} agents ≤ 2× ack with none`, measured: `${median(at5k.acksMs).toFixed(1)} vs ${median(baseline).toFixed(1)} ms (${ratio.toFixed(2)}×)`, pass: ratio <= 2 },
        { target: `every write delivered; p99 ≤ 100 ms at ${at5k.agents} agents`, measured: `p99 ${at5k.p99Ms.toFixed(1)} ms, missing ${at5k.missing}`, pass: at5k.missing === 0 && at5k.p99Ms <= 100 },
        { target: '≤ 24 KiB server memory per connected agent', measured: `${at5k.kibPerAgent.toFixed(1)} KiB`, pass: at5k.kibPerAgent <= 24 },
      );
    }
  } finally {
    stopFleets(fleets);
    fleets.length = 0;
    await client.close();
    await server.stop();
  }

  const replicas = ctx.profile.controlPlaneReplicaAgents;
  if (replicas > 0 && findPostgresBin() && ctx.secondsLeft() > 90) {
    const r = await twoReplicas(ctx, replicas, writes);
    rows.push(...r.rows);
    notes.push(...r.notes);
    targets.push(r.target);
  } else if (replicas > 0) {
    notes.push('Two replicas on PostgreSQL not measured (PostgreSQL binaries missing or the time budget used up).');
  }
  notes.push(
    `Load average (1 min) ${load0.toFixed(2)} at the start, ${(loadavg()[0] ?? 0).toFixed(2)} at the end, on a machine of ${ctx.profile.name === 'full' ? 'shared' : 'any'} cores: figures from a loaded machine are upper bounds.`,
    'Delivery lag runs from sending the write (its commit included) to a stream receiving the event; agents are simulated by load processes speaking gRPC over node:http2 (bench/lib/agent-streams.ts), one HTTP/2 connection each.',
    'CPU per delivered event: server CPU during the writes less its idle rate (heartbeats) over the same time, divided by the deliveries (left out when the server used less than its idle rate, i.e. it was starved of CPU).',
    'RSS per agent: growth over the idle server divided by the agents connected; the first thousands also pay for the V8 heap growing.',
  );
  return {
    id: 'control-plane',
    title: 'Control plane: thousands of agents per replica',
    status: 'ok',
    setup: `One server (SQLite) on core ${SUT_CORE}; agents in load processes (≤ ${AGENTS_PER_PROCESS} each) on core ${LOAD_CORE}, one HTTP/2 connection per agent; ${writes} writes of ${VALUE_BYTES} B per step, ${levels.join(' → ')} agents`,
    rows,
    targets,
    notes,
    extra: { levels: results, baselineAckMs: baseline },
  };
}

async function twoReplicas(ctx: Context, agents: number, writes: number): Promise<{ rows: Row[]; notes: string[]; target: TargetCheck }> {
  const pg = await startThrowawayPostgres();
  const fleets: Fleet[] = [];
  const servers: ServerHandle[] = [];
  let writer: ServerClient | undefined;
  try {
    const url = await pg.createDatabase();
    const secrets = { kek: randomBytes(32).toString('base64'), rootToken: `bench-${randomBytes(16).toString('hex')}` };
    const flags = [...FLEET_SERVER_FLAGS, '--database-url', url];
    servers.push(await startServer(SUT_CORE, flags, undefined, secrets));
    servers.push(await startServer(SUT_CORE, flags, undefined, secrets));
    const [first, second] = servers as [ServerHandle, ServerHandle];
    writer = new ServerClient(first);
    await writer.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, 0, VALUE_BYTES));
    await ackWithoutAgents(writer, 3, 1);
    const baseline = await ackWithoutAgents(writer, writes, 10);
    const rss0 = servers.map((s) => rssBytes(s.child.pid));
    const half = Math.floor(agents / 2);
    const onFirst = await addAgents(ctx.log, fleets, first, NAMESPACE, half);
    const onSecond = await addAgents(ctx.log, fleets, second, NAMESPACE, agents - half);
    const rss = [(rssBytes(first.child.pid) - (rss0[0] ?? 0)) / 1024 / half, (rssBytes(second.child.pid) - (rss0[1] ?? 0)) / 1024 / (agents - half)];
    const acks: number[] = [];
    const lags: [number[], number[]] = [[], []];
    let missing = 0;
    for (let k = 0; k < writes; k++) {
      const result = await writeOnce(writer, [onFirst, onSecond], 100 + k);
      acks.push(result.ackMs);
      missing += result.missing;
      result.perFleet.forEach((l, i) => lags[i as 0 | 1].push(...l));
      await sleep(WRITE_GAP_MS);
    }
    const who = `2 replicas on PostgreSQL, ${agents} agents`;
    const p99 = percentile([...lags[0], ...lags[1]], 99);
    return {
      rows: [
        { system: 'PostgreSQL, 0 agents', metric: 'write acknowledged', unit: 'ms', values: baseline, better: 'lower' },
        { system: who, metric: 'write acknowledged', unit: 'ms', values: acks, better: 'lower' },
        { system: who, metric: 'delivery p50 / p99, agents on the writing replica', unit: 'ms', values: [percentile(lags[0], 50), percentile(lags[0], 99)], better: 'lower' },
        { system: who, metric: 'delivery p50 / p99, agents on the other replica', unit: 'ms', values: [percentile(lags[1], 50), percentile(lags[1], 99)], better: 'lower' },
        { system: who, metric: 'missing deliveries', unit: 'count', values: [missing], better: 'lower' },
        { system: who, metric: 'RSS per agent (each replica)', unit: 'KiB', values: rss, better: 'lower' },
      ],
      notes: [`Two replicas share core ${SUT_CORE} and one PostgreSQL (unpinned); writes go to the first, the second learns them by LISTEN/NOTIFY.`],
      target: { target: `two replicas: every write delivered to all ${agents} agents`, measured: `missing ${missing}, p99 ${p99.toFixed(1)} ms`, pass: missing === 0 },
    };
  } finally {
    stopFleets(fleets);
    await writer?.close();
    for (const s of servers) await s.stop();
    await pg.stop();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
