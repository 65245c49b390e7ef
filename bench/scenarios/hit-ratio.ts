/**
 * Hit ratio under writes: 1k hot keys read at 2,000 req/s while 10 writes/s
 * change random keys. Every read is checked: the agent's SSE stream marks
 * when it applied each write, and a read started after that which returns an
 * older version is a stale read. Reads inside the propagation window (after
 * the server's ack, before the agent applied the event) are counted apart.
 */
import { readAll, seedRange, VALUE_BYTES, type Context } from '../lib/context.ts';
import { runFixedRate } from '../lib/load.ts';
import { SUT_CORE } from '../lib/proc.ts';
import { watchSse, type TimedEvent } from '../lib/sse.ts';
import { keyName, metric, startAgent, valueFor, waitReady } from '../lib/stack.ts';
import { median } from '../lib/stats.ts';
import type { Row, ScenarioResult } from '../lib/types.ts';

const NAMESPACE = 'bench/hot';
const READ_RATE = 2_000;
const WRITES_PER_S = 10;
const TARGET_HIT_RATIO = 0.99;
const GEN_RE = /^k(\d+)-g(\d+)-/;
const CLIENT_CONNECTIONS = 8;

interface Write {
  readonly gen: number;
  readonly revision: number;
  readonly ackNs: bigint;
}

export async function hitRatio(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const base = await ctx.baseWith(0);
  const keys = ctx.profile.hitRatioKeys;
  await seedRange(base.client, NAMESPACE, 0, keys, 60_000);
  const agent = await startAgent(base.server, { core: SUT_CORE, prefixes: ['bench'], args: ['--cache-ttl', '1h'] });
  const sse = watchSse(agent.socketPath, NAMESPACE);
  const events: TimedEvent[] = [];
  sse.onEvent((e) => events.push(e));
  const path = (j: number): string => `/v1/items/${NAMESPACE}/${keyName(j)}?format=raw`;
  const writes = new Map<number, Write[]>();
  const ratios: number[] = [];
  const staleCounts: number[] = [];
  const windowCounts: number[] = [];
  const readCounts: number[] = [];
  const errorCounts: number[] = [];
  const droppedCounts: number[] = [];
  const examples: string[] = [];
  let gen = 0;
  /** hrtime at which the agent announced a revision ≥ r, if it has. */
  const appliedAt = (r: number): bigint | undefined => {
    // Events arrive in revision order; search from the end (recent writes are checked most).
    for (let i = events.length - 1; i >= 0; i--) {
      const e = events[i] as TimedEvent;
      if (Number(e.id) < r) return i + 1 < events.length ? (events[i + 1] as TimedEvent).atNs : undefined;
    }
    return events[0]?.atNs;
  };
  try {
    await waitReady(agent.adminUrl);
    await sse.opened;
    await readAll(agent.socketPath, Array.from({ length: keys }, (_, j) => path(j)));
    const perRepS = ctx.profile.hitRatioS / ctx.profile.reps;
    for (let rep = 0; rep < ctx.profile.reps; rep++) {
      const hits0 = await metric(agent.adminUrl, 'config_sidecar_agent_cache_hits_total');
      const misses0 = await metric(agent.adminUrl, 'config_sidecar_agent_cache_misses_total');
      let stale = 0;
      let inWindow = 0;
      let writing = true;
      const writer = (async () => {
        const interval = 1000 / WRITES_PER_S;
        const started = Date.now();
        let n = 0;
        while (writing && n < WRITES_PER_S * perRepS + 1) {
          const j = Math.floor(Math.random() * keys);
          const g = ++gen;
          const { revision } = await base.client.put(`${NAMESPACE}/${keyName(j)}`, valueFor(j, g, VALUE_BYTES));
          const list = writes.get(j) ?? [];
          list.push({ gen: g, revision, ackNs: process.hrtime.bigint() });
          writes.set(j, list);
          n++;
          const wait = started + n * interval - Date.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        }
      })();
      const result = await runFixedRate(
        { kind: 'socket', socketPath: agent.socketPath },
        {
          rate: READ_RATE,
          durationS: perRepS,
          connections: CLIENT_CONNECTIONS,
          nextPath: () => path(Math.floor(Math.random() * keys)),
          onResponse: (info) => {
            const m = GEN_RE.exec(info.body.toString('latin1', 0, 32));
            if (!m) return;
            const j = Number(m[1]);
            const got = Number(m[2]);
            for (const w of writes.get(j) ?? []) {
              if (w.gen <= got || w.ackNs > info.startedNs) continue;
              const applied = appliedAt(w.revision);
              if (applied !== undefined && applied < info.startedNs) {
                stale++;
                if (examples.length < 5) examples.push(`key ${j}: g${got} served after the agent applied g${w.gen}`);
              } else inWindow++;
              break;
            }
          },
        },
      );
      writing = false;
      await writer;
      const hits = (await metric(agent.adminUrl, 'config_sidecar_agent_cache_hits_total')) - hits0;
      const misses = (await metric(agent.adminUrl, 'config_sidecar_agent_cache_misses_total')) - misses0;
      ratios.push((hits / (hits + misses)) * 100);
      staleCounts.push(stale);
      windowCounts.push(inWindow);
      readCounts.push(result.completed);
      errorCounts.push(result.errors + result.completed - (result.statusCodes['200'] ?? 0));
      droppedCounts.push(result.dropped);
    }
  } finally {
    sse.close();
    await agent.stop();
  }
  const ratio = median(ratios);
  const staleTotal = staleCounts.reduce((a, b) => a + b, 0);
  const errorsTotal = errorCounts.reduce((a, b) => a + b, 0);
  const rows: Row[] = [
    { system: 'agent', metric: 'hit ratio', unit: '%', values: ratios, better: 'higher' },
    { system: 'agent', metric: 'reads', unit: '', values: readCounts, better: 'higher' },
    { system: 'agent', metric: 'stale reads', unit: '', values: staleCounts, better: 'lower' },
    { system: 'agent', metric: 'reads in the propagation window', unit: '', values: windowCounts, better: 'lower' },
    { system: 'agent', metric: 'errors (non-200 or transport)', unit: '', values: errorCounts, better: 'lower' },
    { system: 'load generator', metric: 'reads not sent (client behind schedule)', unit: '', values: droppedCounts, better: 'lower' },
  ];
  return {
    id: 'hit-ratio',
    title: 'Hit ratio under writes',
    status: 'ok',
    setup: `${keys} hot keys read at ${READ_RATE} req/s (open loop, ${CLIENT_CONNECTIONS} connections) for ${ctx.profile.hitRatioS} s in ${ctx.profile.reps} runs, while ${WRITES_PER_S} puts/s change random keys; hits and misses from the agent's /metrics`,
    rows,
    targets: [
      { target: `hit ratio ≥ ${TARGET_HIT_RATIO * 100} %`, measured: `${ratio.toFixed(2)} %`, pass: Number.isFinite(ratio) ? ratio >= TARGET_HIT_RATIO * 100 : null },
      { target: 'zero stale reads, zero errors', measured: `${staleTotal} stale, ${errorsTotal} errors`, pass: staleTotal === 0 && errorsTotal === 0 },
    ],
    notes: [
      ...examples,
      'Each read is checked against every write to its key acknowledged before the read started: older than a write the agent had already announced on SSE = stale; older than a write not yet applied = in the propagation window (the freshness lag, not an error).',
    ],
  };
}
