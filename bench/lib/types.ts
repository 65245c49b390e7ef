/** The shapes every scenario returns and the report renders. */
import type { LatencySummary } from './load.ts';

export type Better = 'higher' | 'lower';

/** One figure of one system, one value per repetition. */
export interface Row {
  readonly system: string;
  readonly metric: string;
  readonly unit: string;
  readonly values: readonly number[];
  readonly better: Better;
  /** A reference row: the agent's rows are divided by it. */
  readonly reference?: boolean;
  readonly note?: string;
}

export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  /** null when it could not be evaluated (e.g. the reference was skipped). */
  readonly pass: boolean | null;
}

export interface ScenarioResult {
  readonly id: string;
  readonly title: string;
  readonly status: 'ok' | 'not-run' | 'failed';
  readonly reason?: string;
  readonly setup: string;
  readonly rows: readonly Row[];
  readonly targets: readonly TargetCheck[];
  /** Latency distributions per system (charted). */
  readonly latency?: Readonly<Record<string, LatencySummary>>;
  /** Freshness lag distributions (charted). */
  readonly lag?: Readonly<Record<string, LatencySummary>>;
  readonly notes: readonly string[];
  readonly seconds: number;
  readonly extra?: Readonly<Record<string, unknown>>;
}

export interface Profile {
  readonly name: 'full' | 'quick' | 'smoke';
  readonly reps: number;
  /** Run length at saturation (the lean closed-loop client), one run of a pair. */
  readonly saturationS: number;
  /**
   * Pairs of adjacent runs (agent, bare node:http) in ABBA order per
   * connection count, after discarded warm-up runs of each until settled:
   * the target ratios are the median of the pairs' ratios (saturation-runs.ts).
   */
  readonly saturationPairs: number;
  /** Fixed number of requests per repetition instead of a duration (smoke). */
  readonly saturationAmount?: number;
  /** redis-benchmark has no duration option: requests per run. */
  readonly redisRequests: number;
  readonly keys: number;
  readonly connections: readonly number[];
  readonly fixedRate: number;
  readonly fixedRateS: number;
  /** Requests per run of the cost scenario (one run of a pair). */
  readonly costRequests: number;
  readonly freshnessChanges: number;
  readonly fanoutWatchers: number;
  readonly fanoutEvents: number;
  /** Control plane: agents connected in steps (one HTTP/2 connection each), writes per step, and agents split over two PostgreSQL replicas (0: skip). */
  readonly controlPlaneAgents: readonly number[];
  readonly controlPlaneWrites: number;
  readonly controlPlaneReplicaAgents: number;
  readonly memoryCounts: readonly number[];
  /** Fresh agents loaded per size up to 10k (100k is loaded once). */
  readonly memoryReps: number;
  /** Pod limit: entries read through the agent under the injector's default memory limit, and SSE clients held open. */
  readonly podLimitEntries: number;
  readonly podLimitSseClients: number;
  /** Limits besides the injector's default to run the pod-limit scenario under (a fresh agent each). */
  readonly podLimitMemory: readonly string[];
  readonly startupReps: number;
  readonly startupPrefetch: number;
  readonly hitRatioS: number;
  readonly hitRatioKeys: number;
  readonly outageS: number;
}

export const PROFILES: Readonly<Record<Profile['name'], Profile>> = {
  full: {
    name: 'full',
    reps: 3,
    saturationS: 0.75,
    saturationPairs: 8,
    redisRequests: 100_000,
    keys: 10_000,
    connections: [16, 64],
    fixedRate: 2_000,
    fixedRateS: 3,
    costRequests: 40_000,
    freshnessChanges: 500,
    fanoutWatchers: 1_000,
    fanoutEvents: 10,
    controlPlaneAgents: [1_000, 5_000, 10_000],
    controlPlaneWrites: 10,
    controlPlaneReplicaAgents: 5_000,
    memoryCounts: [1_000, 10_000, 100_000],
    memoryReps: 3,
    podLimitEntries: 100_000,
    podLimitSseClients: 1_000,
    podLimitMemory: ['128Mi'],
    startupReps: 5,
    startupPrefetch: 100,
    hitRatioS: 10,
    hitRatioKeys: 1_000,
    outageS: 6,
  },
  quick: {
    name: 'quick',
    reps: 3,
    saturationS: 0.5,
    saturationPairs: 6,
    redisRequests: 30_000,
    keys: 2_000,
    connections: [16],
    fixedRate: 2_000,
    fixedRateS: 1,
    costRequests: 10_000,
    freshnessChanges: 100,
    fanoutWatchers: 300,
    fanoutEvents: 5,
    controlPlaneAgents: [1_000],
    controlPlaneWrites: 5,
    controlPlaneReplicaAgents: 1_000,
    memoryCounts: [1_000, 10_000],
    memoryReps: 1,
    podLimitEntries: 10_000,
    podLimitSseClients: 300,
    podLimitMemory: [],
    startupReps: 3,
    startupPrefetch: 100,
    hitRatioS: 3,
    hitRatioKeys: 1_000,
    outageS: 2,
  },
  smoke: {
    name: 'smoke',
    reps: 3,
    saturationS: 1,
    saturationAmount: 100,
    saturationPairs: 6,
    redisRequests: 300,
    keys: 50,
    connections: [4],
    fixedRate: 500,
    fixedRateS: 0.2,
    costRequests: 300,
    freshnessChanges: 10,
    fanoutWatchers: 10,
    fanoutEvents: 2,
    controlPlaneAgents: [20],
    controlPlaneWrites: 2,
    controlPlaneReplicaAgents: 20,
    memoryCounts: [200],
    memoryReps: 3,
    podLimitEntries: 200,
    podLimitSseClients: 20,
    podLimitMemory: [],
    startupReps: 3,
    startupPrefetch: 10,
    hitRatioS: 0.5,
    hitRatioKeys: 50,
    outageS: 1,
  },
};
