/** Every scenario of the suite, in the order the report lists them (issue 8's table). */
import type { Context } from '../lib/context.ts';
import type { Profile, ScenarioResult } from '../lib/types.ts';
import { controlPlane } from './control-plane.ts';
import { cachedRead, conditionalRead, cost } from './saturation.ts';
import { latencyFixedRate } from './latency.ts';
import { freshness } from './freshness.ts';
import { fanout } from './fanout.ts';
import { memory } from './memory.ts';
import { podLimit } from './pod-limit.ts';
import { startup } from './startup.ts';
import { hitRatio } from './hit-ratio.ts';
import { outage } from './outage.ts';
import { hotKey } from './hot-key.ts';
import { warmStart } from './warm-start.ts';

export interface Scenario {
  readonly id: string;
  readonly title: string;
  readonly run: (ctx: Context) => Promise<Omit<ScenarioResult, 'seconds'>>;
  /** Its own wall-clock budget per profile, in seconds (used when it runs alone). */
  readonly limitS?: Readonly<Record<Profile['name'], number>>;
}

export const SCENARIOS: readonly Scenario[] = [
  { id: 'cached-read-socket', title: 'Cached read, Unix socket', run: (ctx) => cachedRead(ctx, 'socket') },
  { id: 'cached-read-tcp', title: 'Cached read, TCP + pod token', run: (ctx) => cachedRead(ctx, 'tcp') },
  { id: 'latency-fixed-rate', title: 'Read latency at a fixed rate', run: latencyFixedRate },
  { id: 'conditional-read', title: 'Conditional read (304)', run: conditionalRead },
  { id: 'cost', title: 'Cost: CPU per 100k requests', run: cost },
  { id: 'freshness-api', title: 'Freshness, API', run: (ctx) => freshness(ctx, 'api') },
  { id: 'freshness-sse', title: 'Freshness, SSE', run: (ctx) => freshness(ctx, 'sse') },
  { id: 'freshness-files', title: 'Freshness, files', run: (ctx) => freshness(ctx, 'files') },
  { id: 'fan-out', title: 'Fan-out to watch streams', run: fanout },
  { id: 'control-plane', title: 'Control plane: thousands of agents per replica', run: controlPlane, limitS: { full: 900, quick: 120, smoke: 60 } },
  { id: 'hot-key', title: 'Hot key: requests per change', run: hotKey },
  // Alone they get the time their 100k sizes need (memory: reading 100k through the agent takes ~1000 s; pod-limit: ~5 min for both limits).
  { id: 'memory', title: 'Memory (RSS)', run: memory, limitS: { full: 1_800, quick: 120, smoke: 120 } },
  { id: 'pod-limit', title: 'Pod limit: under a real memory limit', run: podLimit, limitS: { full: 900, quick: 120, smoke: 90 } },
  { id: 'start-up', title: 'Start-up to ready', run: startup },
  { id: 'warm-start', title: 'Warm start from the snapshot, server down', run: warmStart },
  { id: 'hit-ratio', title: 'Hit ratio under writes', run: hitRatio },
  { id: 'outage', title: 'Outage: server killed mid-run', run: outage },
];
