/**
 * `config-sidecar server`: flags (each with a CONFIG_SIDECAR_* twin) → server
 * settings → `startServer`. Secrets come only from env or files. SIGTERM and
 * SIGINT close the server in order and exit 0; a hard deadline or a second
 * signal exits 1 (src/shared/shutdown.ts).
 */
import type { Command} from 'commander';
import { Option } from 'commander';
import { envNameFor, readSecretSetting, SettingError } from '../shared/settings.ts';
import { action } from './cli-util.ts';

const ROOT_TOKEN_ENV = 'CONFIG_SIDECAR_ROOT_TOKEN';
const KEK_ENV = 'CONFIG_SIDECAR_KEK';
const TEST_HOOKS_ENV = 'CONFIG_SIDECAR_TEST_HOOKS';

function opt(flags: string, description: string, defaultValue?: string): Option {
  const long = /--[a-z-]+/.exec(flags)?.[0] as string;
  const option = new Option(flags, description).env(envNameFor(long));
  return defaultValue === undefined ? option : option.default(defaultValue);
}

export interface ServerCliOptions {
  dataDir?: string;
  databaseUrl?: string;
  databasePoolSize?: string;
  httpListen?: string;
  grpcListen?: string;
  adminListen?: string;
  kekFile?: string;
  authFile?: string;
  rootTokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  insecure?: boolean;
  environments?: string;
  maxVersions?: string;
  keyMaxAge?: string;
  retainEvents?: string;
  retainAge?: string;
  rateLimit?: string;
  heartbeatInterval?: string;
  watchBuffer?: string;
  maxBody?: string;
  shutdownGrace?: string;
  logLevel?: string;
  otlpEndpoint?: string;
  otelEndpoint?: string;
  traceSampleRatio?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  jwksUrl?: string;
  jwksFile?: string;
}

/** Adds the server flags to a command (also used by `dev`, if it wants them). */
export function addServerOptions(command: Command): Command {
  return command
    .addOption(opt('--data-dir <dir>', 'embedded SQLite store directory', '.config-sidecar/server'))
    .addOption(opt('--database-url <url>', 'PostgreSQL URL (instead of the embedded store); prefer the env var, it may hold a password'))
    .addOption(opt('--database-pool-size <n>', 'PostgreSQL connections per replica (plus one for LISTEN)', '10'))
    .addOption(opt('--http-listen <host:port>', 'REST listener', '127.0.0.1:8420'))
    .addOption(opt('--grpc-listen <host:port>', 'gRPC Watch listener', '127.0.0.1:8421'))
    .addOption(opt('--admin-listen <host:port>', '/healthz /readyz /metrics listener', '127.0.0.1:8422'))
    .addOption(opt('--kek-file <file>', `key-encryption key file (base64 of 32 bytes); or set ${KEK_ENV}`))
    .addOption(opt('--auth-file <file>', 'tokens (SHA-256), roles and bindings, YAML; reloaded on change (docs/AUTH.md)'))
    .addOption(opt('--root-token-file <file>', `bootstrap admin token file; or set ${ROOT_TOKEN_ENV}`))
    .addOption(opt('--tls-cert <file>', 'TLS certificate (PEM) for REST and gRPC; reloaded on change'))
    .addOption(opt('--tls-key <file>', 'TLS private key (PEM) for REST and gRPC'))
    .addOption(opt('--insecure', 'allow plaintext on non-loopback addresses (logs a warning)'))
    .addOption(opt('--environments <list>', 'environment chain, least to most specific', 'base,dev,staging,prod'))
    .addOption(opt('--max-versions <n>', 'versions kept per item (the current one is never pruned)', '20'))
    .addOption(opt('--key-max-age <duration>', 'rotate a namespace data key older than this', '90d'))
    .addOption(opt('--retain-events <n>', 'events kept in the log; older resumes get ResyncRequired', '100000'))
    .addOption(opt('--retain-age <duration>', 'also compact events older than this, e.g. 7d (default: by count only)'))
    .addOption(opt('--rate-limit <n>', 'requests per second per pod (the JWT kubernetes.io.pod claim, else the token; burst 2x); 0 = off', '200'))
    .addOption(opt('--max-connections <n>', 'connections the REST listener holds; past it the oldest one that has not sent a request is shed', '4096'))
    .addOption(opt('--max-grpc-connections <n>', 'connections the gRPC listener holds (one per agent); past it the oldest one that has not started a call is shed', '20000'))
    .addOption(opt('--grpc-first-call-timeout <duration>', 'close a gRPC connection that starts no call (TLS handshake included) within this', '10s'))
    .addOption(opt('--max-watch-streams-per-pod <n>', 'open Watch streams per pod (or token); more are refused with RESOURCE_EXHAUSTED', '64'))
    .addOption(opt('--watch-open-rate <n>', 'Watch opens per second per pod (burst 2x); 0 = off', '10'))
    .addOption(opt('--audit-retain-age <duration>', 'audit rows older than this are deleted', '30d'))
    .addOption(opt('--audit-max-rows <n>', 'audit rows kept at most (oldest deleted first)', '1000000'))
    .addOption(opt('--heartbeat-interval <duration>', 'Watch heartbeat (bookmark) interval, skipped by a stream just sent an event; agents treat 3 silent intervals as a lost stream', '1s'))
    .addOption(opt('--agent-expiry <duration>', 'drop an agent from GET /v1/agents after this long without a report', '10m'))
    .addOption(opt('--watch-buffer <n>', 'events queued per watch stream before a slow reader is ended', '1024'))
    .addOption(opt('--max-body <size>', 'largest request body', '1MiB'))
    .addOption(opt('--shutdown-grace <duration>', 'on SIGTERM, time for in-flight requests and watch streams before connections are cut; the process exits at most 5s later', '10s'))
    .addOption(opt('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info'))
    .addOption(opt('--otlp-endpoint <url>', 'OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces (or set OTEL_EXPORTER_OTLP_ENDPOINT); tracing is off without either'))
    .addOption(opt('--otel-endpoint <url>', 'renamed to --otlp-endpoint').hideHelp())
    .addOption(opt('--trace-sample-ratio <ratio>', 'fraction of root traces sampled', '0.1'))
    .addOption(opt('--jwt-issuer <url>', 'Kubernetes service-account token issuer'))
    .addOption(opt('--jwt-audience <aud>', 'audience the projected token must carry'))
    .addOption(opt('--jwks-url <url>', 'issuer JWKS URL'))
    .addOption(opt('--jwks-file <file>', 'issuer JWKS file (instead of --jwks-url)'));
}

/** Turns CLI options plus secrets from env/files into raw settings for parseServerSettings. */
export function rawServerSettings(o: ServerCliOptions, env: NodeJS.ProcessEnv = process.env): { raw: Record<string, unknown>; kekSetting: string } {
  const kek = readSecretSetting({ fileFlag: '--kek-file', file: o.kekFile, envVar: KEK_ENV, env });
  const rootToken = readSecretSetting({ fileFlag: '--root-token-file', file: o.rootTokenFile, envVar: ROOT_TOKEN_ENV, env });
  // The old name is refused rather than ignored: a silently dropped endpoint would look like "no traces" later.
  if (o.otelEndpoint !== undefined) throw new SettingError('--otel-endpoint (CONFIG_SIDECAR_OTEL_ENDPOINT)', 'was renamed: use --otlp-endpoint (CONFIG_SIDECAR_OTLP_ENDPOINT) or OpenTelemetry\'s OTEL_EXPORTER_OTLP_ENDPOINT');
  const { kekFile, rootTokenFile, jwtIssuer, otelEndpoint, ...rest } = o;
  void otelEndpoint;
  void rootTokenFile;
  return {
    raw: { ...rest, jwtIssuer, kek, rootToken, insecure: o.insecure === true || (o.insecure as unknown) === 'true' },
    kekSetting: kekFile ? `--kek-file (${kekFile})` : KEK_ENV,
  };
}

export function register(program: Command): void {
  const command = program.command('server').description('Run the control plane: REST API, gRPC Watch stream and admin listener.');
  addServerOptions(command)
    .addHelpText(
      'after',
      `
Secrets are read only from environment variables or files, never from flags:
  ${KEK_ENV}            base64 of 32 bytes (or --kek-file)
  ${ROOT_TOKEN_ENV}     bootstrap admin token (or --root-token-file)

SIGTERM or SIGINT: stop accepting, end watch streams, finish in-flight requests
(cut after --shutdown-grace), close the store, exit 0. A second signal, or a
shutdown still running 5s after the grace period, exits 1 at once.

Examples:
  $ export ${KEK_ENV}=$(openssl rand -base64 32) ${ROOT_TOKEN_ENV}=$(openssl rand -hex 24)
  $ config-sidecar server --data-dir /var/lib/config-sidecar --auth-file /etc/config-sidecar/auth.yaml
  $ config-sidecar server --http-listen 0.0.0.0:8420 --grpc-listen 0.0.0.0:8421 \\
      --tls-cert /tls/tls.crt --tls-key /tls/tls.key --kek-file /kek/key \\
      --jwt-issuer https://kubernetes.default.svc --jwt-audience config-sidecar --jwks-url https://kubernetes.default.svc/openid/v1/jwks
  $ config-sidecar server --http-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0   # free ports, printed in the "server listening" log line
  $ CONFIG_SIDECAR_DATABASE_URL='postgres://cs:PASSWORD@db:5432/config_sidecar?sslmode=require' \\
      config-sidecar server --database-pool-size 20 --retain-events 1000000 --retain-age 7d   # PostgreSQL, several replicas (docs/OPERATIONS.md)
  $ config-sidecar server --shutdown-grace 20s   # below the pod's terminationGracePeriodSeconds (30s by default)`,
    )
    .action(
      action(async (options: ServerCliOptions) => {
        const [{ parseServerSettings }, { startServer }, { exitOnSignals }, { createLogger }] = await Promise.all([
          import('../server/settings.ts'),
          import('../server/main.ts'),
          import('../shared/shutdown.ts'),
          import('../shared/logger.ts'),
        ]);
        const { raw, kekSetting } = rawServerSettings(options);
        const settings = parseServerSettings(raw, kekSetting);
        const logger = createLogger({ component: 'server', level: settings.logLevel });
        const started = startServer(settings, { logger, testHooks: process.env[TEST_HOOKS_ENV] === '1' });
        // Installed before anything listens: a signal that arrives as the "server listening" line is read
        // (or during start-up, which then finishes and closes) must never meet the default action.
        exitOnSignals({ close: async () => (await started).close(), logger, graceMs: settings.shutdownGrace });
        await started;
      }),
    );
}
