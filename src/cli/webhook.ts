/**
 * `config-sidecar webhook`: the mutating admission webhook (HTTPS). Also
 * exports the injector flags `inject` shares, so both inject the same way.
 * SIGTERM/SIGINT finish in-flight reviews and exit 0 (src/shared/shutdown.ts).
 */
import { Option, type Command } from 'commander';
import { action } from './cli-util.ts';
import {
  DEFAULT_AGENT_SERVER,
  DEFAULT_AGENT_SERVER_CA_CONFIG_MAP,
  DEFAULT_AGENT_SERVER_GRPC,
  DEFAULT_SHARED_GROUP,
  DEFAULT_SIDECAR_IMAGE,
  DEFAULT_TOKEN_AUDIENCE,
  DEFAULT_TOKEN_EXPIRATION,
  DEFAULT_WEBHOOK_LISTEN,
  DEFAULT_WEBHOOK_MAX_BODY,
  DEFAULT_WEBHOOK_TLS_CERT,
  DEFAULT_WEBHOOK_TLS_KEY,
} from '../webhook/defaults.ts';

/** Flags describing what injected agents are told; shared with `inject`. */
export function addInjectorOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--sidecar-image <image>', 'image of the injected agent (pods may override with config-sidecar.io/image)')
        .env('CONFIG_SIDECAR_SIDECAR_IMAGE')
        .default(DEFAULT_SIDECAR_IMAGE),
    )
    .addOption(
      new Option('--agent-server <urls>', "the server's REST URL(s) the agents use, comma-separated for failover")
        .env('CONFIG_SIDECAR_AGENT_SERVER')
        .default(DEFAULT_AGENT_SERVER),
    )
    .addOption(
      new Option('--agent-server-grpc <addresses>', "the server's gRPC host:port(s) the agents use")
        .env('CONFIG_SIDECAR_AGENT_SERVER_GRPC')
        .default(DEFAULT_AGENT_SERVER_GRPC),
    )
    .addOption(
      new Option('--agent-server-ca-config-map <name>', "ConfigMap with ca.crt in each app namespace, the CA agents trust for the server; '' for none")
        .env('CONFIG_SIDECAR_AGENT_SERVER_CA_CONFIG_MAP')
        .default(DEFAULT_AGENT_SERVER_CA_CONFIG_MAP),
    )
    .addOption(
      new Option('--agent-insecure', 'let agents talk plaintext to a non-loopback server (dev clusters only)').env('CONFIG_SIDECAR_AGENT_INSECURE'),
    )
    .addOption(
      new Option('--token-audience <audience>', 'audience of the projected service-account token agents present to the server')
        .env('CONFIG_SIDECAR_TOKEN_AUDIENCE')
        .default(DEFAULT_TOKEN_AUDIENCE),
    )
    .addOption(
      new Option('--token-expiration <duration>', 'lifetime of that token (the kubelet refreshes it at 80%; at least 10m)')
        .env('CONFIG_SIDECAR_TOKEN_EXPIRATION')
        .default(DEFAULT_TOKEN_EXPIRATION),
    )
    .addOption(
      new Option('--shared-group <gid>', "fsGroup set on pods without one: the group the agent shares with the app containers")
        .env('CONFIG_SIDECAR_SHARED_GROUP')
        .default(String(DEFAULT_SHARED_GROUP)),
    );
}

export function register(program: Command): void {
  const command = program
    .command('webhook')
    .description('Run the mutating admission webhook that injects the agent into annotated pods (HTTPS).')
    .addOption(new Option('--listen <host:port>', 'HTTPS listen address (POST /mutate, /healthz, /readyz, /metrics)').env('CONFIG_SIDECAR_LISTEN').default(DEFAULT_WEBHOOK_LISTEN))
    .addOption(
      new Option('--tls-cert <file>', 'PEM certificate; re-read when it changes (cert-manager rotation)')
        .env('CONFIG_SIDECAR_TLS_CERT')
        .default(DEFAULT_WEBHOOK_TLS_CERT),
    )
    .addOption(new Option('--tls-key <file>', 'PEM private key; re-read with the certificate').env('CONFIG_SIDECAR_TLS_KEY').default(DEFAULT_WEBHOOK_TLS_KEY))
    .addOption(new Option('--max-body <size>', 'largest AdmissionReview accepted (413 above)').env('CONFIG_SIDECAR_MAX_BODY').default(DEFAULT_WEBHOOK_MAX_BODY))
    .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('CONFIG_SIDECAR_LOG_LEVEL').default('info'));
  addInjectorOptions(command)
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar webhook --tls-cert /etc/tls/tls.crt --tls-key /etc/tls/tls.key
  $ CONFIG_SIDECAR_SIDECAR_IMAGE=registry.example/config-sidecar:0.1.0 config-sidecar webhook
  $ config-sidecar webhook --listen 127.0.0.1:0 --agent-insecure --agent-server-ca-config-map ''   # local try-out

Pods opt in with the annotation config-sidecar.io/inject: "true" in a namespace
labelled config-sidecar.io/injection=enabled; see docs/KUBERNETES.md.

SIGTERM or SIGINT: stop accepting, finish in-flight reviews, exit 0. A second
signal, or a shutdown still running 15s after the signal, exits 1 at once.`,
    )
    .action(
      action(async (options: Record<string, unknown>) => {
        const [{ parseWebhookSettings }, { startWebhook, REQUEST_TIMEOUT_MS }, { createLogger }, { exitOnSignals }] = await Promise.all([
          import('../webhook/settings.ts'),
          import('../webhook/server.ts'),
          import('../shared/logger.ts'),
          import('../shared/shutdown.ts'),
        ]);
        const settings = parseWebhookSettings(options);
        const logger = createLogger({ component: 'webhook', level: settings.logLevel });
        const started = startWebhook(settings, logger);
        // Installed before it listens. No request outlives REQUEST_TIMEOUT_MS, so that is the grace period.
        exitOnSignals({ close: async () => (await started).close(), logger, graceMs: REQUEST_TIMEOUT_MS });
        await started;
      }),
    );
}
