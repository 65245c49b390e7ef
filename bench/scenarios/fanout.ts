/**
 * Fan-out: one server (on the SUT core), N simulated agents' Watch streams
 * opened with the real @grpc/grpc-js client (spread over several HTTP/2
 * connections, as separate pods would be) in this process on the load core.
 * For each of a few puts: the lag from the server's ack to each stream
 * receiving the ItemChanged event, and the time until all have it.
 */
import * as grpc from '@grpc/grpc-js';
import { watchClientConstructor, watchEventFromWire, watchRequestToWire } from '../../src/shared/watch-proto.ts';
import { newHistogram, summarise } from '../lib/load.ts';
import { rssBytes, SUT_CORE } from '../lib/proc.ts';
import { keyName, ServerClient, startServer, valueFor } from '../lib/stack.ts';
import { percentile } from '../lib/stats.ts';
import { VALUE_BYTES, type Context } from '../lib/context.ts';
import type { Row, ScenarioResult } from '../lib/types.ts';

const NAMESPACE = 'bench/fan';
/** Streams per client channel (HTTP/2 connection); 1,000 watchers → 20 connections. */
const STREAMS_PER_CHANNEL = 50;
const OPEN_TIMEOUT_MS = 60_000;
const EVENT_TIMEOUT_MS = 10_000;
const TARGET_P99_MS = 500;

type WireEvent = Parameters<typeof watchEventFromWire>[0];

export async function fanout(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const watchers = ctx.profile.fanoutWatchers;
  const server = await startServer(SUT_CORE);
  const client = new ServerClient(server);
  const Client = watchClientConstructor();
  const channels: grpc.Client[] = [];
  const calls: grpc.ClientReadableStream<unknown>[] = [];
  const rssBefore = rssBytes(server.child.pid);
  /** Per put revision: arrival times (ns) per watcher index. */
  const arrivals = new Map<number, bigint[]>();
  const waiting = new Map<number, { remaining: number; resolve: () => void }>();
  let streamErrors = 0;
  try {
    await client.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, 0, VALUE_BYTES));
    const opened: Promise<void>[] = [];
    for (let i = 0; i < watchers; i++) {
      if (i % STREAMS_PER_CHANNEL === 0) {
        channels.push(new Client(server.grpcAddress, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
      }
      const channel = channels[channels.length - 1] as grpc.Client;
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${server.rootToken}`);
      const call = (channel as unknown as { watch: (r: unknown, m: grpc.Metadata) => grpc.ClientReadableStream<unknown> }).watch(
        watchRequestToWire({ prefixes: [NAMESPACE], sinceRevision: 0, agentId: `bench-${i}` }),
        metadata,
      );
      calls.push(call);
      let first = true;
      opened.push(
        new Promise<void>((resolve, reject) => {
          call.on('error', (err: grpc.ServiceError) => {
            if (err.code !== grpc.status.CANCELLED) streamErrors++;
            if (first) reject(err);
          });
          call.on('data', (wire: unknown) => {
            const at = process.hrtime.bigint();
            if (first) {
              first = false;
              resolve();
            }
            const e = watchEventFromWire(wire as WireEvent);
            if (!e || e.type !== 'itemChanged') return;
            const list = arrivals.get(e.revision) ?? [];
            list[i] = at;
            arrivals.set(e.revision, list);
            const w = waiting.get(e.revision);
            if (w && --w.remaining === 0) w.resolve();
          });
        }),
      );
    }
    const openStarted = Date.now();
    await withTimeout(Promise.all(opened), OPEN_TIMEOUT_MS, `opening ${watchers} watch streams`);
    const openSeconds = (Date.now() - openStarted) / 1000;
    const rssWatching = rssBytes(server.child.pid);
    ctx.log(`${watchers} streams open in ${openSeconds.toFixed(1)} s; server RSS ${(rssWatching / 2 ** 20).toFixed(0)} MiB`);

    const perEvent: Array<{ p50: number; p99: number; all: number }> = [];
    const putMs: number[] = [];
    const histogram = newHistogram();
    let missing = 0;
    for (let k = 0; k < ctx.profile.fanoutEvents; k++) {
      // Events can arrive before the put's response: arrivals are recorded by revision either way.
      let resolveAll!: () => void;
      const all = new Promise<void>((r) => (resolveAll = r));
      const sendNs = process.hrtime.bigint();
      const { revision } = await client.put(`${NAMESPACE}/${keyName(0)}`, valueFor(0, k + 1, VALUE_BYTES));
      putMs.push(Number(process.hrtime.bigint() - sendNs) / 1e6);
      const already = (arrivals.get(revision) ?? []).filter((x) => x !== undefined).length;
      if (already >= watchers) resolveAll();
      else waiting.set(revision, { remaining: watchers - already, resolve: resolveAll });
      const done = await Promise.race([all.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), EVENT_TIMEOUT_MS))]);
      waiting.delete(revision);
      const times = arrivals.get(revision) ?? [];
      const lagsMs: number[] = [];
      for (let i = 0; i < watchers; i++) {
        const at = times[i];
        if (at === undefined) {
          missing++;
          continue;
        }
        // From the moment the put was sent: the event often reaches watchers before the put's response does.
        const lag = Number(at - sendNs);
        histogram.recordValue(Math.max(1, lag));
        lagsMs.push(lag / 1e6);
      }
      if (!done) ctx.log(`event ${k}: only ${lagsMs.length}/${watchers} streams received it within ${EVENT_TIMEOUT_MS} ms`);
      perEvent.push({ p50: percentile(lagsMs, 50), p99: percentile(lagsMs, 99), all: percentile(lagsMs, 100) });
    }
    const rssAfter = rssBytes(server.child.pid);
    const summary = summarise(histogram);
    const allMs = perEvent.map((e) => e.all);
    const p99AllMs = summary.p99 / 1000;
    const rows: Row[] = [
      { system: 'server → watchers', metric: 'delivery lag p50 (per event)', unit: 'ms', values: perEvent.map((e) => e.p50), better: 'lower' },
      { system: 'server → watchers', metric: 'delivery lag p99 (per event)', unit: 'ms', values: perEvent.map((e) => e.p99), better: 'lower' },
      { system: 'server → watchers', metric: 'time to deliver to all', unit: 'ms', values: allMs, better: 'lower' },
      { system: 'server', metric: 'put round trip (send → ack)', unit: 'ms', values: putMs, better: 'lower' },
      { system: 'server', metric: 'RSS idle (before streams)', unit: 'MiB', values: [rssBefore / 2 ** 20], better: 'lower' },
      { system: 'server', metric: `RSS with ${watchers} streams`, unit: 'MiB', values: [rssWatching / 2 ** 20, rssAfter / 2 ** 20], better: 'lower' },
    ];
    return {
      id: 'fan-out',
      title: `Fan-out: one event to ${watchers.toLocaleString('en-US')} watch streams`,
      status: 'ok',
      setup: `${watchers} Watch streams (real grpc-js client, ${channels.length} HTTP/2 connections of ≤ ${STREAMS_PER_CHANNEL} streams) on one server (SQLite); ${ctx.profile.fanoutEvents} puts, lag per stream from sending the put (the write itself included: events often arrive before the put's response); streams opened in ${openSeconds.toFixed(1)} s`,
      rows,
      lag: { [`${watchers} watchers`]: summary },
      targets: [
        {
          target: `p99 delivery ≤ ${TARGET_P99_MS} ms (all deliveries of all events), none missing`,
          measured: `${p99AllMs.toFixed(1)} ms; max ${(summary.max / 1000).toFixed(1)} ms; missing ${missing}`,
          pass: missing === 0 && streamErrors === 0 ? p99AllMs <= TARGET_P99_MS : false,
        },
      ],
      notes: [
        `Server RSS: ${(rssBefore / 2 ** 20).toFixed(0)} MiB idle, ${(rssWatching / 2 ** 20).toFixed(0)} MiB with the streams open, ${(rssAfter / 2 ** 20).toFixed(0)} MiB after the events.`,
        'All watchers run in one Node process on the load core, so decoding 1,000 copies of each event there is part of the measured time (an upper bound on the server side).',
        ...(streamErrors ? [`${streamErrors} streams ended with an error`] : []),
      ],
    };
  } finally {
    for (const c of calls) c.cancel();
    for (const ch of channels) ch.close();
    await client.close();
    await server.stop();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
    }),
  ]);
}
