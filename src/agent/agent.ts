/**
 * The sidecar agent, assembled: upstream (undici) → DEK store and value cache
 * → event applier fed by the Watch stream → applied-events hub → data API on
 * the Unix socket and 127.0.0.1, admin listener with /healthz /readyz
 * /metrics. `startAgent` resolves once every listener is bound; readiness
 * follows when the prefetch set is loaded and the stream is up.
 *
 * Optional parts load only when configured (footprint is a product feature):
 * tracing (OpenTelemetry SDK), the YAML parser (only with --config) and the
 * file renderer with its chokidar watcher (only with `files:`).
 */
import { unlink } from 'node:fs/promises';
import type { Server, ServerResponse } from 'node:http';
import type { Tracer } from '@opentelemetry/api';
import { createAdminServer, listen, type Readiness } from '../shared/admin-server.ts';
import { OffsetClock, systemClock, type Clock } from '../shared/clock.ts';
import { generateTransportKeyPair, zeroize } from '../shared/crypto.ts';
import { AppError, describeError } from '../shared/errors.ts';
import { sendError } from '../shared/http-io.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { namespaceMatchesAny, type ItemRef } from '../shared/paths.ts';
import type { ListenAddress } from '../shared/settings.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { WatchEvent } from '../shared/watch-proto.ts';
import { createAgentMetrics, type AgentMetrics } from './agent-metrics.ts';
import { AGENT_SETTING_LABELS } from './agent-setting-labels.ts';
import type { AgentSettings } from './agent-settings.ts';
import { AppliedEventsHub } from './applied-events.ts';
import { createDataServer, listenSocket, writePodToken } from './data-listeners.ts';
import { DekStore } from './dek-store.ts';
import { RingStore } from './ring-store.ts';
import { EventApplier } from './event-applier.ts';
import type { HandlerDeps } from './request-handler.ts';
import { serveSse } from './sse-stream.ts';
import { createTestHookRoutes, HoldGate, StreamSplit, TEST_APPLY_SETS_ENV, TEST_CONFIG_VALIDATOR_ENV, testHooksEnabled } from './test-hooks.ts';
import { ChangeSetAssembler } from './change-set-assembler.ts';
import { resolveAgentId } from './agent-id.ts';
import { FleetReporter } from './fleet-reporter.ts';
import { AppHealthSignal, parseHealthBody, startAppHealthProbe } from './app-health.ts';
import { RolloutTracker } from './rollout-tracker.ts';
import { AppliedPosition } from './applied-position.ts';
import { agentReadiness, describeStreamError } from './readiness.ts';
import { prefetchAll } from './prefetcher.ts';
import { createTokenSource } from './token-source.ts';
import { getHeapStatistics } from 'node:v8';
import { checkWritableDir } from './volume-access.ts';
import { agentMemory, type AgentMemory } from './memory-budget.ts';
import type { MemoryLimit } from './memory-limit.ts';
import { memoryCheck, registerMemoryMetrics } from './memory-report.ts';
import { processHeap, startHeapTrimmer } from './heap-trimmer.ts';
import { createUpstream } from './upstream.ts';
import { release, ValueCache, variantKey, type Loader } from './value-cache.ts';
import { createEnvelopeLoader, createValueSource, type ValueSource } from './value-source.ts';
import { startWatchClient, type WatchClient } from './watch-client.ts';
import { tracingRequested } from '../shared/otlp-endpoint.ts';
import type { RestoredSnapshot } from './snapshot/snapshot-restore.ts';
import type { Snapshotter } from './snapshot/snapshotter.ts';

/** Prefetch waits this long for the stream first, so no change slips between fetch and stream start. */
export const PREFETCH_STREAM_WAIT_MS: Milliseconds = 3_000;
/** Open SSE streams per agent without a memory limit; under one the cap is derived (memory-budget.ts). More get 429. */
export { MAX_SSE_CLIENTS } from './memory-budget.ts';
/** Retry-After on that 429, in seconds. */
export const SSE_RETRY_AFTER_S = 5;
/** In-flight requests get this long to finish on SIGTERM. */
export const DRAIN_TIMEOUT_MS: Milliseconds = 5_000;

export interface StartAgentOptions {
  readonly logger?: Logger;
  /** Injected clock; with test hooks the agent makes an OffsetClock itself. */
  readonly clock?: Clock;
  /** Raw flag values, kept so a config file reload merges flags over the new file. */
  readonly flags?: Record<string, unknown>;
  readonly env?: NodeJS.ProcessEnv;
  /** The container's memory limit as detected (tests inject one); default: read at start (memory-limit.ts). */
  readonly memory?: MemoryLimit;
}

export type ConfigListener = (next: AgentSettings, previous: AgentSettings) => void | Promise<void>;

export interface RunningAgent {
  readonly id: string;
  readonly socketPath: string;
  readonly tokenPath: string;
  /** undefined when --http-listen off. */
  readonly httpAddress: ListenAddress | undefined;
  readonly adminAddress: ListenAddress;
  readonly settings: () => AgentSettings;
  readonly events: AppliedEventsHub;
  readonly values: ValueSource;
  readonly metrics: AgentMetrics;
  /** The memory limit and the bounds derived from it. */
  readonly memory: AgentMemory;
  readonly logger: Logger;
  readonly clock: Clock;
  appliedRevision(): number;
  readiness(): Readiness;
  /** Resolves when the agent first becomes ready. */
  readonly ready: Promise<void>;
  /** Applies new settings; hot-reloadable: prefetch, files, logLevel. Others are logged and need a restart. */
  reloadConfig(next: AgentSettings): Promise<void>;
  /** Re-reads `--config` (flags still win); an invalid file is logged and the running config kept. */
  reloadConfigFile(): Promise<{ ok: true } | { ok: false; error: string }>;
  /** Called after each applied reload; returns an unsubscribe function. */
  onConfigChange(listener: ConfigListener): () => void;
  /**
   * Rewrites the warm-restart snapshot now rather than at the next interval
   * (a no-op without --snapshot-dir): for whatever makes values in it
   * unservable, such as a retired data key.
   */
  requestSnapshotNow(): void;
  /** Stop accepting, drain, close the stream, zero the cache. Safe to call twice. */
  close(): Promise<void>;
}

/** Settings whose change needs a restart (listeners, upstream, cache sizing). */
const RESTART_KEYS = ['server', 'serverGrpc', 'serverCa', 'insecure', 'tokenFile', 'env', 'prefix', 'socket', 'httpListen', 'adminListen', 'cacheTtl', 'cacheMaxEntries', 'cacheMaxBytes', 'memoryLimit', 'maxStale', 'snapshotDir', 'snapshotInterval'] as const;

function closeServer(server: Server | undefined): Promise<void> {
  if (!server?.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.closeAllConnections();
    }, DRAIN_TIMEOUT_MS);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

export async function startAgent(initial: AgentSettings, options: StartAgentOptions = {}): Promise<RunningAgent> {
  let settings = initial;
  const hooks = testHooksEnabled(options.env);
  const logger = options.logger ?? createLogger({ component: 'agent', level: settings.logLevel });
  const offsetClock = hooks ? new OffsetClock() : undefined;
  const clock: Clock = options.clock ?? offsetClock ?? systemClock;
  // Its own clock under test hooks, so a test can make reports fall due without the stream's heartbeat watchdog firing.
  const reportClock = hooks && !options.clock ? new OffsetClock() : undefined;
  if (hooks) logger.warn({ env: 'CONFIG_SIDECAR_TEST_HOOKS' }, 'TEST HOOKS ENABLED: debug routes on the admin listener can move the clock and hold fetches; never use in production');
  // First: a --cache-max-bytes that cannot fit the limit stops the agent before anything starts.
  const memory = agentMemory(settings, options.memory);
  const { budget } = memory;
  if (budget.warning) logger.warn({ limit: budget.limit }, budget.warning);
  logger.info(
    {
      limit: budget.limit ?? 'none',
      source: memory.memory.source,
      cgroup: memory.memory.cgroupDir,
      target: budget.target,
      cacheMaxBytes: budget.cacheMaxBytes,
      cacheMaxBytesFrom: budget.cacheMaxBytesFrom,
      maxWatchStreams: budget.maxSseClients,
      maxConnections: budget.maxConnections,
      heapLimit: getHeapStatistics().heap_size_limit,
    },
    'memory budget',
  );
  const keyPair = generateTransportKeyPair();
  const token = createTokenSource(settings.tokenFile, clock, logger);
  const id = resolveAgentId(settings.agentId, token.current(), options.env ?? process.env);
  const prefixes = (): readonly string[] => settings.prefix;
  // The gauges read the cache at scrape time, after it exists.
  const metrics = createAgentMetrics({ entries: () => cache.size, bytes: () => cache.bytes });

  // Tracing costs ~13 MiB and ~85 ms to load: only with --otlp-endpoint or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
  let tracing: { tracer: Tracer; shutdown: () => Promise<void> } | undefined;
  if (tracingRequested(settings.otlpEndpoint)) {
    const { startTracing } = await import('../shared/tracing.ts');
    tracing = await startTracing({ endpoint: settings.otlpEndpoint, sampleRatio: settings.traceSampleRatio, serviceName: 'config-sidecar-agent' });
  }
  const wrappers = tracing ? await import('./tracing-wrappers.ts') : undefined;
  const plainUpstream = createUpstream({
    servers: settings.server,
    caFile: settings.serverCa,
    token,
    clock,
    agentId: id,
    observe: (route, outcome, ms) => metrics.upstreamLatency.observe({ route, outcome }, ms / 1000),
  });
  const upstream = tracing && wrappers ? wrappers.traceUpstream(tracing.tracer, plainUpstream) : plainUpstream;
  const deks = new DekStore(upstream, keyPair);
  const gate = hooks ? new HoldGate() : undefined;
  // Read lazily: the applier and the watch client are built below.
  const position = new AppliedPosition({ applied: () => applier.appliedRevision, connected: () => watch.connected, clock });
  const plainLoader: Loader = createEnvelopeLoader(
    upstream,
    deks,
    gate,
    {
      decryptionFailed: (ref) => {
        metrics.decryptionFailures.inc();
        logger.error({ namespace: ref.namespace, name: ref.name }, 'envelope failed authentication; refused, not cached');
      },
      futureFill: (outcome) => metrics.futureFillWaits?.inc({ outcome }),
      fetched: (ref, rollout, version) => rollouts.fetched(ref, rollout, version),
    },
    position,
  );
  const loader = tracing && wrappers ? wrappers.traceLoader(tracing.tracer, plainLoader) : plainLoader;

  let streamDownSince: Milliseconds | undefined = clock.now();
  // Warm restart (--snapshot-dir): loaded only when configured.
  const warm = settings.snapshotDir ? await import('./snapshot/warm-restart.ts') : undefined;
  let snapshotter: Snapshotter | undefined;
  let streamError: string | undefined;
  let everConnected = false;
  const cache = new ValueCache({
    loader,
    clock,
    ttl: settings.cacheTtl,
    maxStale: settings.maxStale,
    maxEntries: settings.cacheMaxEntries,
    maxBytes: budget.cacheMaxBytes,
    streamDownSince: () => streamDownSince,
    // With a snapshot, a value dropped by a failure (revoked, deleted) is taken out of it at once.
    observer: warm ? warm.observeDrops(metrics.cacheObserver, () => snapshotter?.requestNow()) : metrics.cacheObserver,
    onBackgroundError: (ref, env, err: AppError) => logger.warn({ namespace: ref.namespace, name: ref.name, env, code: err.code }, 'background refresh failed'),
    onChange: (value) => applier.valueChanged(value),
  });
  const hub = new AppliedEventsHub();
  const rings = new RingStore({
    upstream,
    deks,
    clock,
    streamDownSince: () => streamDownSince,
    maxStale: settings.maxStale,
    // A previous version aged out: files re-render and SSE clients hear it, at the applied revision.
    onAgedOut: (ref, env, version) => hub.publish({ type: 'changed', namespace: ref.namespace, name: ref.name, env, version, revision: applier.appliedRevision }),
  });
  const applier = new EventApplier({
    rings,
    cache,
    deks,
    hub,
    prefixes,
    prefetch: () => settings.prefetch,
    env: settings.env,
    clock,
    jitterMs: settings.refetchJitter,
    metrics,
    logger,
  });
  // Staged rollouts: which candidates this agent serves, and the application's own health signal.
  const appHealth = new AppHealthSignal(
    () => reporter.changed(),
    () => applier.appliedRevision,
  );
  const rollouts = new RolloutTracker(() => reporter.changed());
  const appHealthProbe = settings.appHealthUrl ? startAppHealthProbe(settings.appHealthUrl, appHealth, clock) : undefined;
  const forgetRollouts = (event: WatchEvent): void => {
    if (event.type === 'itemChanged' || event.type === 'itemDeleted') rollouts.forget({ namespace: event.namespace, name: event.name });
  };
  let reportedRevision = -1;
  const afterApply = (): void => {
    position.advanced();
    if (applier.appliedRevision !== reportedRevision) {
      reportedRevision = applier.appliedRevision;
      reporter.changed();
    }
  };
  const assembler = new ChangeSetAssembler({
    apply: (event) => {
      forgetRollouts(event);
      applier.apply(event);
      afterApply();
    },
    applyBatch: (events) => {
      events.forEach(forgetRollouts);
      applier.applyBatch(events);
      afterApply();
    },
  });
  const membersOneByOne = hooks && (options.env ?? process.env)[TEST_APPLY_SETS_ENV] === 'members';
  const validatorScript = hooks ? (options.env ?? process.env)[TEST_CONFIG_VALIDATOR_ENV] : undefined;
  const applyEvent = membersOneByOne
    ? (event: WatchEvent): void => {
        forgetRollouts(event);
        applier.apply(event);
        afterApply();
      }
    : (event: WatchEvent): void => assembler.offer(event);
  const split = hooks ? new StreamSplit() : undefined;
  const allowed = (ref: ItemRef): boolean => namespaceMatchesAny(ref.namespace, prefixes());
  const values = createValueSource(cache, settings.env, allowed, rings);

  // Before the stream starts: a restored snapshot decides where it resumes and what is served meanwhile.
  let restored: RestoredSnapshot | undefined;
  if (warm && settings.snapshotDir) {
    try {
      const started = await warm.startWarmRestart({
        dir: settings.snapshotDir,
        settings,
        cache,
        rings,
        rollouts,
        applier,
        hub,
        clock,
        logger,
        registry: metrics.registry,
        streamDownSince: () => streamDownSince,
        connected: () => watch.connected,
      });
      restored = started.restored;
      snapshotter = started.snapshotter;
    } catch (err) {
      await upstream.close();
      throw err;
    }
    if (restored) streamDownSince = restored.takenAt;
    // A rotation may have retired data keys (issue 20): the snapshot is rewritten at once, not at the next interval.
    void (async () => {
      for await (const event of hub.subscribe({ filter: (e) => e.type === 'rotated' })) if (event.type === 'rotated') snapshotter?.requestNow();
    })();
  }

  let firstConnect: () => void = () => {};
  const connectedOnce = new Promise<void>((resolve) => {
    firstConnect = resolve;
  });
  const watch: WatchClient = startWatchClient({
    addresses: settings.serverGrpc,
    caFile: settings.serverCa,
    prefixes: settings.prefix,
    agentId: id,
    token,
    clock,
    logger,
    start: () => applier.startFrom(),
    onEvent: split ? (event) => split.pass(event, applyEvent) : applyEvent,
    onError: (error) => {
      streamError = describeStreamError(error.code, error.details);
    },
    onState: (state) => {
      metrics.streamConnected.set(state.connected ? 1 : 0);
      if (!state.connected) {
        assembler.reset();
        position.disconnected();
      }
      reporter.changed();
      if (state.connected) {
        // What a (re)connect does to the cache is the applier's, on the stream's first message.
        streamDownSince = undefined;
        streamError = undefined;
        everConnected = true;
        firstConnect();
      } else {
        streamDownSince = clock.now();
        metrics.streamReconnects.inc();
        logger.warn({ address: state.address, reason: state.reason }, 'watch stream lost; serving from cache (stale-marked) within max-stale');
      }
    },
  });

  let wasReady = false;
  const reporter = new FleetReporter({
    addresses: settings.serverGrpc,
    caFile: settings.serverCa,
    token,
    clock: reportClock ?? clock,
    logger,
    agentId: id,
    prefixes,
    state: () => {
      const ready = readiness().ready;
      wasReady ||= ready;
      const health = !wasReady ? 'starting' : ready && watch.connected ? 'ok' : 'degraded';
      const app = appHealth.state;
      return {
        appliedRevision: applier.appliedRevision,
        storeId: '',
        connected: watch.connected,
        health,
        rollouts: rollouts.list(),
        appHealth: app.appHealth,
        appHealthRevision: app.revision,
        ...(filesRevision ? { rendersFiles: true, filesRevision: filesRevision() } : {}),
        healthReason: app.appHealth === 'unhealthy' ? app.reason : health === 'degraded' ? (watch.connected ? 'not ready' : `watch stream down${streamError ? `: ${streamError}` : ''}`).slice(0, 200) : '',
      };
    },
  });
  reporter.start();

  // --- data API -------------------------------------------------------------
  const socketPath = settings.socket;
  let sseClients = 0;
  let podToken: Buffer = Buffer.alloc(0);
  const deps: HandlerDeps = {
    prefixes,
    get podToken() {
      return podToken;
    },
    env: settings.env,
    read: (ref, env) => cache.read(ref, env),
    readCached: (ref, env, key, memo) => cache.readCached(ref, env, key, memo),
    cacheKey: variantKey,
    release: (result) => release(result.value),
    readRing: (ref, env) => rings.read(ref, env),
  };
  const sseHandler = (res: ServerResponse, result: { prefix: string; sinceRevision: number | undefined }): void => {
    if (sseClients >= budget.maxSseClients) {
      sendError(res, new AppError('rate_limited', `At most ${budget.maxSseClients} watch streams per agent.`, { headers: { 'retry-after': String(SSE_RETRY_AFTER_S) } }));
      return;
    }
    void serveSse(res, {
      hub,
      prefix: result.prefix,
      allowedPrefixes: prefixes,
      sinceRevision: result.sinceRevision,
      clock,
      onOpen: () => metrics.sseClients.set(++sseClients),
      onClose: () => metrics.sseClients.set(--sseClients),
    }).catch((err: unknown) => logger.warn({ err: describeError(err) }, 'watch stream to a client failed'));
  };
  const received = { requests: 0 };
  const dataHooks = {
    deps,
    received,
    serveSse: sseHandler,
    // Under a memory limit the connection cap comes from the budget (at most MAX_CONNECTIONS).
    maxConnections: budget.maxConnections,
    // A plain function (no `this`): handed over as it is, one call per response instead of two.
    onResponse: metrics.countResponse,
    appHealth: (body: Buffer) => {
      const { healthy, reason } = parseHealthBody(body);
      appHealth.set(healthy, reason);
      return { appHealth: appHealth.state.appHealth, reason: appHealth.state.reason };
    },
  };
  const socketServer = createDataServer('socket', dataHooks);
  const tcpServer = settings.httpListen === 'off' ? undefined : createDataServer('tcp', dataHooks);
  registerMemoryMetrics(metrics.registry, memory.memory, budget);

  // --- readiness and admin --------------------------------------------------
  // Prefetched items restored from a snapshot are loaded: served stale-marked until the stream resumes
  // (which vouches for them or resyncs), never read again for the prefetch's sake (a stale read revalidates).
  const toPrefetch = restored ? settings.prefetch.filter((ref) => cache.peek(ref, settings.env) === undefined) : settings.prefetch;
  let prefetchDone = toPrefetch.length === 0;
  let prefetchFailing: readonly string[] = [];
  /** The files renderer's published revision (the fleet report's), when files are rendered. */
  let filesRevision: (() => number) | undefined;
  let filesHealth: (() => { ready: boolean; files: Readonly<Record<string, { ok: boolean; detail?: string }>> }) | undefined;
  const readiness = (): Readiness =>
    agentReadiness({
      now: clock.now(),
      streamDownSince,
      everConnected,
      maxStale: settings.maxStale,
      appliedRevision: applier.appliedRevision,
      prefetch: { done: prefetchDone, total: settings.prefetch.length, failing: prefetchFailing },
      tokenHealthy: token.healthy,
      streamError,
      files: filesHealth?.(),
      memory: memoryCheck(memory.memory, budget),
      snapshot: restored && { takenAt: restored.takenAt, revision: restored.position.revision, values: restored.values, rings: restored.rings },
    });
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    readyResolve = resolve;
  });

  const adminServer = createAdminServer({
    registry: metrics.registry,
    readiness,
    ...(hooks && offsetClock && reportClock && gate && split
      ? {
          extraRoutes: createTestHookRoutes({
            clock: offsetClock,
            reportClock,
            gate,
            split,
            deliver: applyEvent,
            stream: { pause: () => watch.pause(), resume: () => watch.resume() },
            appliedRevision: () => applier.appliedRevision,
            state: () => ({
              appliedRevision: applier.appliedRevision,
              serverRevision: applier.serverRevision,
              connected: watch.connected,
              reconnects: watch.reconnects,
              cacheEntries: cache.size,
              dekVersions: deks.heldVersions(),
              now: clock.now(),
            }),
          }),
        }
      : {}),
  });

  // --- bind -----------------------------------------------------------------
  if (settings.files?.length) {
    // A files volume the agent cannot write is a start-up error, not a publication retried forever.
    const { DEFAULT_FILES_DIR } = await import('./files/file-spec.ts');
    await checkWritableDir(settings.filesDir ?? DEFAULT_FILES_DIR, AGENT_SETTING_LABELS.filesDir ?? '--files-dir').catch(async (err: unknown) => {
      watch.close();
      await snapshotter?.close();
      await upstream.close();
      throw err;
    });
  }
  let httpAddress: ListenAddress | undefined;
  let adminAddress: ListenAddress;
  let tokenPath: string;
  try {
    await listenSocket(socketServer, socketPath);
    const written = await writePodToken(socketPath);
    podToken = written.token;
    tokenPath = written.path;
    if (tcpServer && settings.httpListen !== 'off') httpAddress = await listen(tcpServer, settings.httpListen);
    adminAddress = await listen(adminServer, settings.adminListen);
  } catch (err) {
    watch.close();
    await snapshotter?.close();
    await Promise.all([closeServer(socketServer), closeServer(tcpServer), closeServer(adminServer)]);
    await upstream.close();
    throw err;
  }
  logger.info(
    { socket: socketPath, http: httpAddress ? `http://${httpAddress.host}:${httpAddress.port}` : 'off', admin: `http://${adminAddress.host}:${adminAddress.port}`, tokenFile: tokenPath, prefixes: settings.prefix, env: settings.env, agentId: id },
    'agent listening',
  );
  const heapProbe = processHeap();
  const heapTrimmer = heapProbe
    ? startHeapTrimmer({
        clock: systemClock,
        probe: heapProbe,
        activity: () => received.requests + hub.publishedCount,
        onTrim: ({ before, after, pauseMs, nextGapMs }) =>
          logger.debug({ rssBeforeMiB: Math.round(before / 2 ** 20), rssAfterMiB: Math.round(after / 2 ** 20), pauseMs: Math.round(pauseMs), nextGapMs }, 'heap trimmed'),
      })
    : undefined;

  // --- prefetch -------------------------------------------------------------
  let closed = false;
  const stopping = new AbortController();
  const checkReady = (): void => {
    if (readiness().ready) readyResolve();
  };
  const prefetch = (refs: readonly ItemRef[]): Promise<void> =>
    prefetchAll(refs, {
      cache,
      env: settings.env,
      clock,
      logger,
      stopped: () => closed,
      onRound: (failing) => {
        prefetchFailing = failing;
      },
    });
  const stopWaiting = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, PREFETCH_STREAM_WAIT_MS);
    timer.unref();
  });
  void Promise.race([connectedOnce, stopWaiting])
    .then(() => prefetch(toPrefetch))
    .then(() => {
      prefetchDone = true;
      if (!closed) logger.info({ items: settings.prefetch.length, appliedRevision: applier.appliedRevision }, 'prefetch complete');
      checkReady();
    });
  // Readiness also flips when the stream connects after prefetch.
  void connectedOnce.then(checkReady);
  const readyPoll = setInterval(() => {
    if (readiness().ready) {
      readyResolve();
      clearInterval(readyPoll);
    }
  }, 100);
  readyPoll.unref();

  // --- config reload ----------------------------------------------------------
  const configListeners = new Set<ConfigListener>();
  const reloadConfig = async (next: AgentSettings): Promise<void> => {
    const previous = settings;
    const needRestart = RESTART_KEYS.filter((key) => JSON.stringify(previous[key]) !== JSON.stringify(next[key]));
    if (needRestart.length > 0) logger.warn({ settings: needRestart }, 'config change needs a restart to take effect; keeping the running values');
    const kept = Object.fromEntries(RESTART_KEYS.map((key) => [key, previous[key]]));
    settings = Object.freeze({ ...next, ...kept }) as AgentSettings;
    logger.level = settings.logLevel;
    const added = settings.prefetch.filter((ref) => !previous.prefetch.some((p) => p.namespace === ref.namespace && p.name === ref.name));
    if (added.length) void prefetch(added);
    for (const listener of configListeners) await listener(settings, previous);
    logger.info({ prefetch: settings.prefetch.length, files: settings.files?.length ?? 0 }, 'config reloaded');
  };

  // --- files (optional) -------------------------------------------------------
  let stopFiles: (() => Promise<void>) | undefined;
  /** Checks a reloaded `files:` list against the directory before anything is applied, so a bad edit changes nothing. */
  let checkFiles: ((files: AgentSettings['files']) => void) | undefined;
  let stopConfigWatcher: (() => Promise<void>) | undefined;
  const startFiles = async (): Promise<void> => {
    if (!settings.files?.length || stopFiles) return;
    const [{ FileRenderer, loadFileSpecs }, { DEFAULT_FILES_DIR }] = await Promise.all([import('./files/render-files.ts'), import('./files/file-spec.ts')]);
    const filesDir = settings.filesDir ?? DEFAULT_FILES_DIR;
    const renderer = new FileRenderer({
      filesDir,
      // Validated with the settings; the real directory (symlink escapes) again here. A SettingError names the entry.
      specs: loadFileSpecs(settings.files, filesDir),
      values,
      events: hub,
      registry: metrics.registry,
      logger,
      clock,
      appliedRevision: () => applier.appliedRevision,
    });
    // Before start(): /readyz must wait for the first publication (the files are part of the prefetch).
    filesHealth = () => renderer.health();
    // A staged rollout counts this canary as applied only once its files are published at the rollout's revision.
    filesRevision = () => renderer.publishedRevision;
    renderer.activity.on('caughtUp', () => reporter.changed());
    checkFiles = (files) => void loadFileSpecs(files ?? [], filesDir);
    await renderer.start();
    stopFiles = () => renderer.stop();
    configListeners.add(async (next) => {
      await renderer.reconfigure(loadFileSpecs(next.files ?? [], filesDir));
    });
  };
  await startFiles().catch((err: unknown) => {
    logger.error({ err: describeError(err) }, 'file renderer failed to start');
    throw err;
  });

  const agent: RunningAgent = {
    id,
    socketPath,
    tokenPath,
    httpAddress,
    adminAddress,
    settings: () => settings,
    events: hub,
    values,
    metrics,
    memory,
    logger,
    clock,
    appliedRevision: () => applier.appliedRevision,
    readiness,
    ready,
    reloadConfig,
    async reloadConfigFile() {
      try {
        // The schema (zod) and yaml run in a child process: loaded here they would stay resident for good.
        const { createConfigValidator } = await import('./config-validator.ts');
        const validate = createConfigValidator(validatorScript ? { script: validatorScript } : {});
        const next = await validate({ ...(options.flags ?? {}), config: settings.config }, stopping.signal);
        checkFiles?.(next.files);
        await reloadConfig(next);
        if (next.files?.length && !stopFiles) await startFiles();
        return { ok: true };
      } catch (err) {
        const error = describeError(err);
        if (stopping.signal.aborted) logger.info('config reload dropped: the agent is stopping');
        else logger.error({ err: error }, 'config reload refused; keeping the running config');
        return { ok: false, error };
      }
    },
    requestSnapshotNow() {
      snapshotter?.requestNow();
    },
    onConfigChange(listener) {
      configListeners.add(listener);
      return () => configListeners.delete(listener);
    },
    async close() {
      if (closed) return;
      closed = true;
      stopping.abort(); // a reload's validator child is killed, not waited for
      clearInterval(readyPoll);
      heapTrimmer?.stop();
      logger.info('agent stopping: draining requests');
      const draining = Promise.all([closeServer(socketServer), closeServer(tcpServer)]);
      hub.closeAll(); // ends SSE streams so the drain can finish
      await draining;
      // The last snapshot, while the stream still vouches for the values.
      await snapshotter?.close();
      watch.close();
      applier.close();
      position.close();
      reporter.close();
      appHealthProbe?.close();
      await stopConfigWatcher?.();
      await stopFiles?.();
      cache.close();
      deks.clear();
      rings.clear();
      zeroize(podToken);
      await upstream.close();
      await closeServer(adminServer);
      await Promise.all([unlink(socketPath).catch(() => {}), unlink(tokenPath).catch(() => {})]);
      await tracing?.shutdown();
      logger.info('agent stopped');
    },
  };
  // --- config file hot reload (chokidar, loaded only with --config) -----------
  if (settings.config) {
    const { ConfigWatcher } = await import('./files/config-watcher.ts');
    const watcher = new ConfigWatcher({
      path: settings.config,
      logger,
      registry: metrics.registry,
      async apply() {
        const result = await agent.reloadConfigFile();
        if (!result.ok) throw new Error(result.error);
      },
    });
    await watcher.ready;
    stopConfigWatcher = () => watcher.close();
  }
  return agent;
}
