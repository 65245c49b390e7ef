/**
 * `startServer(settings)`: composes the control plane, auth, REST, gRPC Watch
 * and admin listeners, and returns a handle with the bound addresses and an
 * orderly `close()` (stop accepting → end watch streams → finish in-flight
 * requests → close the store). `config-sidecar server` and `dev` both use it.
 */
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { RolloutService } from './rollouts/rollout-service.ts';
import { OffsetClock, systemClock, type Clock, type TimerHandle } from '../shared/clock.ts';
import { createAdminServer, listen } from '../shared/admin-server.ts';
import { describeError } from '../shared/errors.ts';
import { sendJson } from '../shared/http-io.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { envNameFor, SettingError, type ListenAddress } from '../shared/settings.ts';
import { startTracing } from '../shared/tracing.ts';
import type { ControlPlane } from './control-plane.ts';
import { openControlPlane } from './control-plane-impl.ts';
import { createAuthenticator, jwksFrom } from './auth/authenticator.ts';
import { openPolicySource } from './auth/policy-source.ts';
import { createServerMetrics, registerFleetGauges } from './metrics.ts';
import { AgentRegistry } from './fleet/agent-registry.ts';
import { createReportService } from './fleet/report-service.ts';
import { createRateLimiter } from './rate-limiter.ts';
import { startAuditUpkeep } from './audit-upkeep.ts';
import { createRefusalAudit } from './refusal-audit.ts';
import { createCallTracker, createGrpcListener } from './grpc-listener.ts';
import { createRestServer } from './rest/rest-server.ts';
import { loadStatusPage } from './rest/status-page.ts';
import type { ServerSettings } from './settings.ts';
import { insecureGrpcCredentials, TlsSource, type TlsPair } from './tls-files.ts';
import { createWatchService } from './watch/watch-service.ts';

/** How often the key-age policy is checked (on the injectable clock). */
export const KEY_AGE_CHECK_INTERVAL_MS = 60 * 60 * 1000;
/** How long shutdown waits for the trace exporter to send buffered spans. */
export const TRACING_SHUTDOWN_TIMEOUT_MS = 2_000;
/**
 * The server pings idle Watch connections so streams of vanished agents are
 * closed instead of held forever. Agents ping too (HTTP/2 keepalive, to notice
 * a frozen path within seconds): grpc-js servers answer client pings at any
 * rate and never send GOAWAY too_many_pings, and permit_without_calls lets an
 * agent ping between streams, so no server-side ping policy refuses them.
 * (A proxy in between, e.g. Envoy or an ingress, may enforce its own minimum
 * ping interval: allow at least the agent's; see docs/OPERATIONS.md.)
 */
export const GRPC_KEEPALIVE_TIME_MS = 30_000;
export const GRPC_KEEPALIVE_TIMEOUT_MS = 10_000;
export const OPENAPI_URL = new URL('./openapi.json', import.meta.url);

export interface ServerHandle {
  readonly http: ListenAddress;
  readonly grpc: ListenAddress;
  readonly admin: ListenAddress;
  readonly httpUrl: string;
  readonly controlPlane: ControlPlane;
  readonly logger: Logger;
  /** Orderly shutdown; calling it twice returns the same promise. */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly logger?: Logger;
  readonly clock?: Clock;
  /** Exposes POST /test/clock/advance?ms= on the admin listener (CONFIG_SIDECAR_TEST_HOOKS=1). */
  readonly testHooks?: boolean;
}

export async function startServer(settings: ServerSettings, options: StartOptions = {}): Promise<ServerHandle> {
  const logger = options.logger ?? createLogger({ component: 'server', level: settings.logLevel });
  const offsetClock = options.testHooks ? new OffsetClock() : undefined;
  const clock = options.clock ?? offsetClock ?? systemClock;
  const tracing = await startTracing({ endpoint: settings.otlpEndpoint, sampleRatio: settings.traceSampleRatio, serviceName: 'config-sidecar-server' });
  const metrics = createServerMetrics();
  if (!settings.rootToken && !settings.authFile && !settings.jwt) {
    logger.warn(
      'no credentials configured: every API call and agent stream will be refused (401). Set CONFIG_SIDECAR_ROOT_TOKEN (or --root-token-file), --auth-file, or --jwt-issuer/--jwt-audience/--jwks-url (docs/AUTH.md)',
    );
  }
  if (settings.insecure) logger.warn('--insecure: plaintext listeners on non-loopback addresses; tokens and envelopes cross the network unencrypted');

  const controlPlane = await openControlPlane({
    dataDir: settings.dataDir,
    databaseUrl: settings.databaseUrl,
    databasePoolSize: settings.databasePoolSize,
    kek: settings.kek,
    environments: settings.environments,
    maxVersionsPerItem: settings.maxVersions,
    keyMaxAge: settings.keyMaxAge,
    retainEvents: settings.retainEvents,
    retainAge: settings.retainAge,
    clock,
    logger,
  });
  const closers: Array<() => Promise<void> | void> = [];
  const unbind: Array<() => void> = [];
  let draining = false;
  try {
    const policySource = await openPolicySource(settings.authFile, logger, (outcome) => metrics.authReloads.inc({ outcome }));
    closers.push(() => policySource.close());
    const jwt = settings.jwt ? { settings: settings.jwt, keys: await jwksFrom(settings.jwt) } : undefined;
    const authenticator = createAuthenticator({ rootToken: settings.rootToken, policy: policySource.current, jwt, clock });
    const rateLimiter = createRateLimiter(settings.rateLimit, clock);
    const refusals = createRefusalAudit({
      clock,
      write: (entry) =>
        controlPlane.audit(entry).catch((err: unknown) => {
          logger.error({ err: describeError(err), subject: entry.subject, action: entry.action }, 'audit write failed');
        }),
      onAggregated: (count) => metrics.auditDropped.inc({ reason: 'aggregated' }, count),
    });
    closers.push(() => refusals.flush());
    const auditUpkeep = startAuditUpkeep({ controlPlane, clock, logger, metrics, retainAge: settings.auditRetainAge, maxRows: settings.auditMaxRows });
    closers.push(() => auditUpkeep.close());
    const openapi = await readFile(OPENAPI_URL);
    const statusPage = await loadStatusPage();
    const agents = new AgentRegistry({
      table: controlPlane.agentReports,
      clock,
      policy: policySource.current,
      currentRevision: () => controlPlane.currentRevision(),
      expiry: settings.agentExpiry,
      onReport: (agentId) => rollouts.reported(agentId),
    });
    const rollouts = new RolloutService({
      controlPlane,
      reports: controlPlane.agentReports,
      agentExpiry: agents.expiry,
      clock,
      logger,
      onTransition: (state) => metrics.rolloutTransitions?.inc({ state }),
    });
    rollouts.startDriving();
    closers.push(() => rollouts.close());
    registerFleetGauges(metrics.registry, async () => {
      const { agents: live } = await agents.list(() => true);
      return {
        connected: live.filter((a) => a.connected).length,
        disconnected: live.filter((a) => !a.connected && !a.silent).length,
        silent: live.filter((a) => a.silent).length,
        maxLag: Math.max(0, ...live.map((a) => a.lag)),
      };
    });
    const tls = settings.tlsCert && settings.tlsKey ? new TlsSource({ cert: settings.tlsCert, key: settings.tlsKey }, logger) : undefined;

    const rest: Server = createRestServer({
      deps: {
        controlPlane,
        authenticator,
        policy: policySource.current,
        rateLimiter,
        refusals,
        maxBody: settings.maxBody,
        openapi,
        statusPage,
        logger,
        agents,
        rollouts,
        onRotated: (trigger) => metrics.rotations.inc({ trigger }),
      },
      metrics,
      tracer: tracing.tracer,
      logger,
      tls: tls?.current,
      draining: () => draining,
      maxConnections: settings.maxConnections,
    });
    if (tls) {
      // node:https servers have setSecureContext; the listener type is the common http.Server.
      tls.onChange((pair) => (rest as unknown as { setSecureContext(o: TlsPair): void }).setSecureContext(pair));
      tls.watch();
      closers.push(() => tls.close());
    }

    const watch = await createWatchService({
      controlPlane,
      authenticator,
      policy: policySource.current,
      clock,
      logger,
      metrics,
      heartbeatInterval: settings.heartbeatInterval,
      bound: settings.watchBuffer,
      maxStreamsPerPod: settings.maxWatchStreamsPerPod,
      openLimiter: createRateLimiter(settings.watchOpenRate, clock),
      refusals,
    });
    policySource.onChange((policy) => watch.recheck(policy));
    const calls = createCallTracker();
    const grpcServer = new grpc.Server({
      'grpc.keepalive_time_ms': GRPC_KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': GRPC_KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      // Channelz keeps per-connection and per-call trackers nobody reads here (~1.4 KiB per agent).
      'grpc.enable_channelz': 0,
    });
    grpcServer.addService(watch.definition, calls.track(watch.implementation));
    const fleet = createReportService({ registry: agents, authenticator, logger, metrics });
    grpcServer.addService(fleet.definition, calls.track(fleet.implementation));
    // Every listener that bound is closed again when a later one cannot bind, so a taken
    // port ends the process (naming the flag) instead of leaving a half-started server.
    unbind.push(() => grpcServer.forceShutdown());
    const grpcListener = createGrpcListener(
      {
        grpcServer,
        credentials: tls ? tls.grpcCredentials() : insecureGrpcCredentials(),
        maxConnections: settings.maxGrpcConnections,
        firstCallTimeout: settings.grpcFirstCallTimeout,
        clock,
        onShed: (reason) => metrics.grpcConnectionsShed.inc({ reason }),
      },
      calls,
    );
    unbind.push(() => grpcListener.close());
    const grpcPort = (await bindListener('--grpc-listen', settings.grpcListen, () => listen(grpcListener.server, settings.grpcListen))).port;

    unbind.push(() => rest.close());
    const httpBound = await bindListener('--http-listen', settings.httpListen, () => listen(rest, settings.httpListen));
    let ready = true;
    const admin = createAdminServer({
      registry: metrics.registry,
      // Secret reads fail closed without an audit row, so a failing audit log makes the replica not ready.
      readiness: () => ({
        ready: ready && controlPlane.auditWritable,
        checks: {
          store: { ok: ready },
          audit: { ok: controlPlane.auditWritable, ...(controlPlane.auditWritable ? {} : { detail: 'audit writes are failing; secret reads are refused' }) },
          watchStreams: { ok: true, detail: String(watch.openStreams) },
        },
      }),
      extraRoutes: offsetClock
        ? (req, res) => {
            const url = new URL(req.url ?? '/', 'http://admin');
            if (req.method !== 'POST' || url.pathname !== '/test/clock/advance') return false;
            offsetClock.advance(Number(url.searchParams.get('ms') ?? 0));
            sendJson(res, 200, { now: offsetClock.now() });
            return true;
          }
        : undefined,
    });
    unbind.push(() => admin.close());
    const adminBound = await bindListener('--admin-listen', settings.adminListen, () => listen(admin, settings.adminListen));

    let keyAgeTimer: TimerHandle | undefined;
    const checkKeyAge = (): void => {
      keyAgeTimer = clock.setTimeout(() => {
        void controlPlane
          .rotateDueKeys('policy')
          .then((rotated) => {
            for (const r of rotated) {
              metrics.rotations.inc({ trigger: 'policy' });
              logger.info({ namespace: r.namespace, keyVersion: r.keyVersion }, 'data key rotated by age policy');
            }
          })
          .catch((err: unknown) => {
            metrics.storeErrors.inc({ code: 'rotation' });
            logger.error({ err: describeError(err) }, 'key-age rotation failed');
          })
          .finally(checkKeyAge);
      }, Math.min(KEY_AGE_CHECK_INTERVAL_MS, settings.keyMaxAge));
    };
    checkKeyAge();

    const scheme = tls ? 'https' : 'http';
    const grpcBound = { host: settings.grpcListen.host, port: grpcPort };
    const bracket = (h: string): string => (h.includes(':') ? `[${h}]` : h);
    const httpUrl = `${scheme}://${bracket(httpBound.host)}:${httpBound.port}`;
    logger.info(
      { http: httpUrl, ui: `${httpUrl}/ui/`, grpc: `${bracket(grpcBound.host)}:${grpcBound.port}`, admin: `http://${bracket(adminBound.host)}:${adminBound.port}`, tls: Boolean(tls) },
      'server listening',
    );

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        ready = false;
        draining = true;
        keyAgeTimer?.cancel();
        logger.info('shutting down: no new requests; ending watch streams; finishing in-flight requests');
        // A draining replica drives no rollout: another takes them over now, not when the leases lapse.
        const rolloutsStopped = rollouts.close();
        const restClosed = new Promise<void>((resolve) => rest.close(() => resolve()));
        rest.closeIdleConnections();
        watch.close();
        grpcListener.close();
        const grpcClosed = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
        const grace = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), settings.shutdownGrace).unref());
        if ((await Promise.race([Promise.all([restClosed, grpcClosed]), grace])) === 'timeout') {
          logger.warn('shutdown grace period over; cutting remaining connections');
          rest.closeAllConnections();
          grpcServer.forceShutdown();
        }
        await rolloutsStopped;
        for (const closer of closers.reverse()) await closer();
        await controlPlane.close();
        settings.kek.destroy();
        // Health checks and scrapes have nothing worth finishing; a kept-alive or half-sent one must not hold the exit.
        const adminClosed = new Promise<void>((resolve) => admin.close(() => resolve()));
        admin.closeAllConnections();
        await adminClosed;
        // An unreachable collector must not hold the exit: unexported spans are dropped after the timeout.
        const tracingStopped = await Promise.race([
          tracing.shutdown().then(() => true),
          new Promise<false>((resolve) => setTimeout(() => resolve(false), TRACING_SHUTDOWN_TIMEOUT_MS).unref()),
        ]);
        if (!tracingStopped) logger.warn({ timeoutMs: TRACING_SHUTDOWN_TIMEOUT_MS }, 'trace exporter did not flush in time; spans dropped');
        logger.info('server stopped');
      })();
      return closing;
    };

    return { http: httpBound, grpc: grpcBound, admin: adminBound, httpUrl, controlPlane, logger, close };
  } catch (err) {
    for (const close of unbind.reverse()) close();
    for (const closer of closers.reverse()) await closer();
    await controlPlane.close();
    throw err;
  }
}

/** Binds one listener; a failure becomes a SettingError naming the flag, its env twin and the address. */
async function bindListener<T>(flag: string, address: ListenAddress, bind: () => Promise<T>): Promise<T> {
  try {
    return await bind();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason =
      code === 'EADDRINUSE' || /address already in use|No address added/i.test(describeError(err))
        ? 'is in use by another process; stop it or choose another port (port 0 picks a free one)'
        : code === 'EACCES'
          ? 'may not be bound by this user (ports below 1024 need privileges); choose a port above 1024'
          : `cannot be bound (${describeError(err)})`;
    throw new SettingError(`${flag} (${envNameFor(flag)})`, `${address.host}:${address.port} ${reason}`);
  }
}
