/**
 * Control plane at fleet scale (issue 21): one server replica (SQLite) pinned
 * to the SUT core; agents' Watch streams held by separate load processes on
 * the load core, one HTTP/2 connection per agent; the writer is this process.
 * For 1k, 5k and 10k agents (added in steps): write acknowledgement (against
 * the same server with no agents), delivery lag of each write to every
 * stream (from sending the write), missing deliveries, server RSS per agent
 * and server CPU per message written. Then two replicas on one PostgreSQL
 * with the agents split across them, writes to one: every agent on both
 * replicas must get every write.
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { addAgents, AGENTS_PER_PROCESS, FLEET_SERVER_FLAGS, stopFleets, tell, type Fleet } from '../lib/agent-fleet.ts';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, LOAD_CORE, rssBytes, startChild, SUT_CORE } from '../lib/proc.ts';
import { keyName, metric, ServerClient, startServer, valueFor, type ServerHandle } from '../lib/stack.ts';
import { median, percentile } from '../lib/stats.ts';
import { VALUE_BYTES, type Context } from '../lib/context.ts';
import type { Row, ScenarioResult, TargetCheck } from '../lib/types.ts';
import { startThrowawayPostgres, findPostgresBin } from '../../test/helpers/store-postgres.ts';

const NAMESPACE = 'bench/cp';
const SENT_METRIC = 'config_sidecar_server_watch_events_sent_total';
const BARE_HTTP2 = fileURLToPath(new URL('../refs/bare-http2-streams.ts', import.meta.url));
const DELIVERY_TIMEOUT_MS = 10_000;
/** Idle time over which the streams' steady cost (heartbeats) is measured (shorter in --smoke). */
const IDLE_SAMPLE_MS = 3_000;
const SMOKE_IDLE_SAMPLE_MS = 300;
/** Pause between writes, so each is measured on its own. */
const WRITE_GAP_MS = 200;

interface WriteResult {
  readonly ackMs: number;
  /** The event's message size as the agents received it. */
  readonly bytes: number;
  readonly lagsMs: number[];
  /** The lags of each fleet's agents (same order as `fleets`). */
  readonly perFleet: number[][];
  readonly missing: number;
}

/** Writes one item through `client`; resolves with the committed revision. */
const putter =
  (client: ServerClient) =>
  async (k: number): Promise<number> =>
    (await client.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, k, VALUE_BYTES))).revision;

/** One write (`write(k)` resolves with its revision), delivered to every agent of `fleets`: ack time, lag per stream, missing. */
async function writeOnce(write: (k: number) => Promise<number>, fleets: readonly Fleet[], k: number): Promise<WriteResult> {
  const sendNs = process.hrtime.bigint();
  const revision = await write(k);
  const ackMs = Number(process.hrtime.bigint() - sendNs) / 1e6;
  const replies = fleets.map((f) => f.processes.map((p) => p.next('delivered')));
  for (const p of fleets.flatMap((f) => f.processes)) tell(p, { type: 'expect', revision, sendNs: sendNs.toString(), timeoutMs: DELIVERY_TIMEOUT_MS });
  const lagsMs: number[] = [];
  const perFleet: number[][] = [];
  let missing = 0;
  let bytes = 0;
  for (const fleetReplies of replies) {
    const mine: number[] = [];
    for (const reply of await Promise.all(fleetReplies)) {
      if (reply.type !== 'delivered') continue;
      for (const lag of reply.lagsMs) mine.push(lag);
      missing += reply.missing;
      bytes = Math.max(bytes, reply.bytes);
    }
    perFleet.push(mine);
    for (const lag of mine) lagsMs.push(lag);
  }
  return { ackMs, bytes, lagsMs, perFleet, missing };
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
  /** The server's CPU during the writes per message it wrote (events and heartbeats). */
  readonly cpuUsPerDelivery: number;
  /** Heartbeats written during the writes (streams that were just sent an event skip theirs). */
  readonly heartbeatsDuringWrites: number;
  /** The load processes' CPU per message they received (they must not be the bottleneck). */
  readonly loadCpuUsPerDelivery: number;
  readonly eventBytes: number;
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
  const sent0 = await metric(server.adminUrl, SENT_METRIC);
  const cpu0 = cpuSeconds(pid);
  const load0 = loadCpuSeconds(fleets);
  let eventBytes = 0;
  for (let k = 0; k < writes; k++) {
    const r = await writeOnce(putter(client), fleets, from + k);
    eventBytes = Math.max(eventBytes, r.bytes);
    acks.push(r.ackMs);
    for (const lag of r.lagsMs) lags.push(lag);
    missing += r.missing;
    await sleep(WRITE_GAP_MS);
  }
  // All of the server's CPU over the writes, per message it wrote in that time (the events
  // delivered and the heartbeats still due: a stream just sent an event skips its beat, so
  // subtracting the idle heartbeat rate would undercount).
  const busyCpu = cpuSeconds(pid) - cpu0;
  const loadCpu = loadCpuSeconds(fleets) - load0;
  const written = Math.max(1, (await metric(server.adminUrl, SENT_METRIC)) - sent0);
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
    cpuUsPerDelivery: (busyCpu * 1e6) / written,
    heartbeatsDuringWrites: Math.max(0, written - lags.length),
    loadCpuUsPerDelivery: (loadCpu * 1e6) / written,
    eventBytes,
  };
}

/** CPU seconds used so far by every load process of `fleets`. */
function loadCpuSeconds(fleets: readonly Fleet[]): number {
  let sum = 0;
  for (const p of fleets.flatMap((f) => f.processes)) if (p.proc.pid && p.proc.exitCode === null) sum += cpuSeconds(p.proc.pid);
  return sum;
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
        `${agents} agents: ack median ${median(level.acksMs).toFixed(1)} ms (none: ${median(baseline).toFixed(1)}), delivery p50 ${level.p50Ms.toFixed(1)} p99 ${level.p99Ms.toFixed(1)} ms (server fan-out ${level.serverFanOutMs.toFixed(1)} ms), missing ${level.missing}, RSS ${level.rssMiB.toFixed(0)} MiB (${level.kibPerAgent.toFixed(1)} KiB/agent), ${level.cpuUsPerDelivery.toFixed(1)} µs CPU per message written (${level.heartbeatsDuringWrites} heartbeats among them), load processes ${level.loadCpuUsPerDelivery.toFixed(1)} µs per message received, idle ${level.idleCpuPct.toFixed(1)} % CPU`,
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
        { system: who, metric: 'CPU per message written (events and heartbeats)', unit: 'µs', values: [l.cpuUsPerDelivery], better: 'lower', note: `${l.heartbeatsDuringWrites} heartbeats among them` },
        { system: who, metric: 'CPU with streams idle (heartbeats)', unit: '%', values: [l.idleCpuPct], better: 'lower' },
        { system: who, metric: 'load processes: CPU per received message', unit: 'µs', values: [l.loadCpuUsPerDelivery], better: 'lower', note: `${l.eventBytes} B events` },
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

  const floorLevel = results.find((l) => l.agents === 5_000) ?? results[results.length - 1];
  if (floorLevel && ctx.secondsLeft() > 90) {
    const f = await http2Floor(ctx, floorLevel.agents, writes, floorLevel.eventBytes, ctx.profile.name === 'smoke' ? SMOKE_IDLE_SAMPLE_MS : IDLE_SAMPLE_MS);
    ctx.log(
      `HTTP/2 floor, ${f.agents} connections: delivery p50 ${f.p50Ms.toFixed(1)} p99 ${f.p99Ms.toFixed(1)} ms, missing ${f.missing}, ${f.kibPerAgent.toFixed(1)} KiB/connection (idle ${f.idleMiB.toFixed(0)} MiB), ${f.cpuUsPerDelivery.toFixed(1)} µs CPU/delivery, write loop ${f.loopMs.toFixed(1)} ms`,
    );
    const who = `bare node:http2 floor, ${f.agents} connections`;
    rows.push(
      { system: who, metric: 'delivery to every stream p50', unit: 'ms', values: [f.p50Ms], better: 'lower' },
      { system: who, metric: 'delivery to every stream p99', unit: 'ms', values: [f.p99Ms], better: 'lower' },
      { system: who, metric: 'missing deliveries', unit: 'count', values: [f.missing], better: 'lower' },
      { system: who, metric: 'RSS per agent', unit: 'KiB', values: [f.kibPerAgent], better: 'lower', note: `idle ${f.idleMiB.toFixed(0)} MiB` },
      ...(Number.isNaN(f.cpuUsPerDelivery) ? [] : [{ system: who, metric: 'CPU per message written (events and heartbeats)', unit: 'µs', values: [f.cpuUsPerDelivery], better: 'lower' as const, note: 'no heartbeats' }]),
      { system: who, metric: 'one loop writing the event to every stream', unit: 'ms', values: [f.loopMs], better: 'lower', note: `${f.eventBytes} B events` },
      { system: who, metric: 'load processes: CPU per received message', unit: 'µs', values: [f.loadCpuUsPerDelivery], better: 'lower' },
    );
    notes.push(
      `The floor (bench/refs/bare-http2-streams.ts): a bare node:http2 server with the gRPC listener's HTTP/2 settings on core ${SUT_CORE}, holding ${f.agents} connections from the same load processes with one open response stream each, writing one ${f.eventBytes} B length-prefixed message (the size the server's events arrived at) to every stream in one loop. What Node's HTTP/2 costs with nothing on top: per-agent memory below ${f.kibPerAgent.toFixed(1)} KiB is out of reach with one HTTP/2 connection per agent on Node.`,
    );
  } else if (floorLevel) {
    notes.push('The bare node:http2 floor was not measured (the time budget was used up).');
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
    'Delivery lag runs from sending the write (its commit included) to a stream receiving the event; agents are simulated by load processes speaking gRPC over hand-framed HTTP/2 (bench/lib/agent-streams.ts, h2-wire-client.ts), one connection each; their CPU per received event is reported (heartbeats received in the same time included).',
    "CPU per message written: all of the server's CPU during the writes divided by the messages it wrote in that time (watch_events_sent_total: the events delivered and the heartbeats still due; a stream just sent an event skips its next beat). The floor writes no heartbeats; its idle CPU is subtracted.",
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

interface Floor {
  readonly agents: number;
  readonly eventBytes: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly missing: number;
  readonly idleMiB: number;
  readonly kibPerAgent: number;
  readonly cpuUsPerDelivery: number;
  /** The floor's own loop writing one event to every stream (median over the writes). */
  readonly loopMs: number;
  readonly loadCpuUsPerDelivery: number;
}

/**
 * The floor, measured in the same run (bench/refs/bare-http2-streams.ts): a
 * bare node:http2 server on the SUT core holding `agents` connections from the
 * same load processes, one open response stream each, and writing one event
 * of `eventBytes` (the size the server's events arrived at) to every stream.
 * What Node's HTTP/2 costs per connection and per delivery with nothing on top.
 */
async function http2Floor(ctx: Context, agents: number, writes: number, eventBytes: number, idleSampleMs: number): Promise<Floor> {
  const child = startChild('bare-http2-streams', process.execPath, [BARE_HTTP2], { core: SUT_CORE });
  const fleets: Fleet[] = [];
  try {
    const [, h2Port, controlPort] = (await child.waitForLine((l) => l.startsWith('listening '))).split(' ');
    const idleRss = rssBytes(child.pid);
    await addAgents(ctx.log, fleets, { grpcAddress: `127.0.0.1:${h2Port}`, rootToken: 'floor' }, NAMESPACE, agents);
    const rss = rssBytes(child.pid);
    const idleCpu0 = cpuSeconds(child.pid);
    const idle0 = Date.now();
    await sleep(idleSampleMs);
    const idleCpuPerMs = (cpuSeconds(child.pid) - idleCpu0) / (Date.now() - idle0);
    const loops: number[] = [];
    const write = async (k: number): Promise<number> => {
      const res = await fetch(`http://127.0.0.1:${controlPort}/write?revision=${k}&bytes=${eventBytes}`);
      if (!res.ok) throw new Error(`the HTTP/2 floor refused write ${k} (${res.status})`);
      loops.push(((await res.json()) as { ms: number }).ms);
      return k;
    };
    const lags: number[] = [];
    let missing = 0;
    const cpu0 = cpuSeconds(child.pid);
    const load0 = loadCpuSeconds(fleets);
    const t0 = Date.now();
    for (let k = 1; k <= writes; k++) {
      const r = await writeOnce(write, fleets, k);
      for (const lag of r.lagsMs) lags.push(lag);
      missing += r.missing;
      await sleep(WRITE_GAP_MS);
    }
    const busyCpu = cpuSeconds(child.pid) - cpu0 - idleCpuPerMs * (Date.now() - t0);
    return {
      agents,
      eventBytes,
      p50Ms: percentile(lags, 50),
      p99Ms: percentile(lags, 99),
      missing,
      idleMiB: idleRss / 2 ** 20,
      kibPerAgent: (rss - idleRss) / 1024 / agents,
      cpuUsPerDelivery: busyCpu > 0 ? (busyCpu * 1e6) / Math.max(1, lags.length) : Number.NaN,
      loopMs: median(loops),
      loadCpuUsPerDelivery: ((loadCpuSeconds(fleets) - load0) * 1e6) / Math.max(1, lags.length),
    };
  } finally {
    stopFleets(fleets);
    await child.stop();
  }
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
      const result = await writeOnce(putter(writer), [onFirst, onSecond], 100 + k);
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
