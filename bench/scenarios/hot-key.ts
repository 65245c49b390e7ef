/**
 * Hot key: 100 agents (composed in this process from the real agent modules:
 * upstream, DEK store, envelope loader, value cache, event applier and watch
 * client, as agent.ts wires them) each serve one hot key; the key changes a
 * few times. Measured: the server's REST requests per change (envelopes +
 * data keys; the target is zero, since a change under the inline bound carries
 * the sealed value), and the time until every agent serves the new version.
 */
import { createLogger } from '../../src/shared/logger.ts';
import { generateTransportKeyPair } from '../../src/shared/crypto.ts';
import { systemClock } from '../../src/shared/clock.ts';
import { createAgentMetrics } from '../../src/agent/agent-metrics.ts';
import { AppliedEventsHub } from '../../src/agent/applied-events.ts';
import { DekStore } from '../../src/agent/dek-store.ts';
import { EventApplier } from '../../src/agent/event-applier.ts';
import { createUpstream, type Upstream } from '../../src/agent/upstream.ts';
import { release, ValueCache } from '../../src/agent/value-cache.ts';
import { createEnvelopeLoader } from '../../src/agent/value-source.ts';
import { startWatchClient, type WatchClient } from '../../src/agent/watch-client.ts';
import { metric, ServerClient, startServer, valueFor } from '../lib/stack.ts';
import { SUT_CORE } from '../lib/proc.ts';
import { percentile } from '../lib/stats.ts';
import { VALUE_BYTES, type Context } from '../lib/context.ts';
import type { Row, ScenarioResult } from '../lib/types.ts';

const AGENTS = 100;
const CHANGES = 10;
const NAMESPACE = 'bench/hot';
const REF = { namespace: NAMESPACE, name: 'key' };
const ENV = 'prod';
const CONVERGE_TIMEOUT_MS = 10_000;

interface MiniAgent {
  readonly cache: ValueCache;
  readonly applier: EventApplier;
  readonly watch: WatchClient;
  readonly upstream: Upstream;
  connected: boolean;
}

async function serverRequests(adminUrl: string): Promise<number> {
  return metric(adminUrl, 'config_sidecar_server_http_requests_total');
}

export async function hotKey(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  // Every in-process agent uses the root token, one pod key: lift the per-pod stream cap (64).
  const server = await startServer(SUT_CORE, ['--max-watch-streams-per-pod', String(AGENTS * 2)]);
  const client = new ServerClient(server);
  const logger = createLogger({ component: 'bench-agent', level: 'silent' });
  const agents: MiniAgent[] = [];
  try {
    await client.put(`${NAMESPACE}/key`, valueFor(0, 0, VALUE_BYTES));
    for (let i = 0; i < AGENTS; i++) {
      const token = { current: () => server.rootToken, healthy: true };
      const upstream = createUpstream({ servers: [server.httpUrl], token, clock: systemClock, agentId: `hot-${i}` });
      const deks = new DekStore(upstream, generateTransportKeyPair());
      let down: number | undefined = systemClock.now();
      const late: { applier?: EventApplier } = {};
      const cache = new ValueCache({
        loader: createEnvelopeLoader(upstream, deks),
        clock: systemClock,
        ttl: 3_600_000,
        maxStale: 60_000,
        maxEntries: 100,
        maxBytes: 1 << 20,
        streamDownSince: () => down,
        onChange: (v) => late.applier?.valueChanged(v),
      });
      const metrics = createAgentMetrics({ entries: () => cache.size, bytes: () => cache.bytes });
      const applier = new EventApplier({ cache, deks, hub: new AppliedEventsHub(), prefixes: () => [NAMESPACE], prefetch: () => [], env: ENV, clock: systemClock, jitterMs: 1_000, metrics, logger });
      late.applier = applier;
      const agent: MiniAgent = { cache, applier, upstream, connected: false, watch: undefined as unknown as WatchClient };
      (agent as { watch: WatchClient }).watch = startWatchClient({
        addresses: [server.grpcAddress],
        prefixes: [NAMESPACE],
        agentId: `hot-${i}`,
        token,
        clock: systemClock,
        logger,
        start: () => applier.startFrom(),
        onEvent: (event) => applier.apply(event),
        onState: (state) => {
          agent.connected = state.connected;
          down = state.connected ? undefined : systemClock.now();
        },
      });
      agents.push(agent);
    }
    await until(() => agents.every((a) => a.connected && a.applier.position !== undefined), 30_000, 'every stream to connect');
    // Each agent reads the key once: it is hot, and its data key is known.
    for (const a of agents) release((await a.cache.read(REF, ENV)).value);
    const before = await serverRequests(server.adminUrl);
    const convergeMs: number[] = [];
    for (let k = 1; k <= CHANGES; k++) {
      const sent = performance.now();
      const put = await client.put(`${NAMESPACE}/key`, valueFor(0, k, VALUE_BYTES));
      await until(() => agents.every((a) => a.cache.peek(REF, ENV)?.value.version === put.version), CONVERGE_TIMEOUT_MS, `every agent to serve version ${put.version}`);
      convergeMs.push(performance.now() - sent);
    }
    const requests = (await serverRequests(server.adminUrl)) - before - CHANGES; // the puts themselves
    const perChange = requests / CHANGES;
    ctx.log(`hot key: ${requests} agent requests for ${CHANGES} changes to ${AGENTS} agents`);
    const rows: Row[] = [
      { system: `server (${AGENTS} agents)`, metric: 'agent requests per change (envelopes + data keys)', unit: 'req', values: [perChange], better: 'lower' },
      { system: `${AGENTS} agents`, metric: 'put → every agent serves it, p50', unit: 'ms', values: [percentile(convergeMs, 50)], better: 'lower' },
      { system: `${AGENTS} agents`, metric: 'put → every agent serves it, max', unit: 'ms', values: [Math.max(...convergeMs)], better: 'lower' },
    ];
    return {
      id: 'hot-key',
      title: `Hot key: one change, ${AGENTS} agents`,
      status: 'ok',
      setup: `${AGENTS} agents composed in this process from the real agent modules (one gRPC stream and one REST pool each), each serving one hot ${VALUE_BYTES}-byte secret; ${CHANGES} puts; the server's request counter read before and after`,
      rows,
      targets: [{ target: 'zero refetches for a value under the inline bound (64 KiB)', measured: `${perChange.toFixed(1)} requests per change`, pass: perChange === 0 }],
      notes: ['Requests are every REST call the server counted during the change phase minus the puts; a server without inline layers answers one envelope per agent per change.'],
    };
  } finally {
    for (const a of agents) {
      a.watch.close();
      a.applier.close();
      a.cache.close();
      await a.upstream.close();
    }
    await client.close();
    await server.stop();
  }
}

async function until(ok: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
