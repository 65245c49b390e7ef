/**
 * `config-sidecar agent`: flags (each with its CONFIG_SIDECAR_* twin) and an
 * optional YAML `--config`, validated by the agent's one settings schema.
 * Defaults live in the schema (src/agent/agent-settings.ts) so a config-file
 * value is never shadowed by a flag default; `--help` shows them. Once valid,
 * the process re-executes itself once (agent-reexec.ts) and the new image runs
 * the agent from the handed-over settings without the schema (agent-run.ts).
 * SIGTERM and SIGINT end it through src/shared/shutdown.ts (no hang on a
 * broken stdout).
 */
import { Option, type Command } from 'commander';
import type { AgentSettings } from '../agent/agent-settings.ts';
import { envNameFor } from '../shared/settings.ts';
import { encodeHandoff, HANDOFF_ENV, handoffWrittenBy } from './agent-handoff.ts';
import { agentReexecPlan } from './agent-reexec.ts';
import { runAgent } from './agent-run.ts';
import { action } from './cli-util.ts';
import { processIdentity } from './process-identity.ts';
import { execveProblem, execveRoom } from './execve-room.ts';
import { AGENT_ENV, AGENT_NODE_FLAGS, type ReexecPlan } from './runtime-settings.ts';

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

function opt(flags: string, description: string): Option {
  const long = /--[a-z-]+/.exec(flags)?.[0] ?? flags;
  return new Option(flags, description).env(envNameFor(long));
}

export function register(program: Command): void {
  program
    .command('agent')
    .description('Run the sidecar agent: decrypted values in a TTL cache, served over a Unix socket and 127.0.0.1, kept fresh by the Watch stream.')
    .addOption(opt('--config <file>', 'YAML file with any of these settings (camelCase keys, e.g. cacheTtl, prefetch, files); flags win'))
    .addOption(opt('--server <urls>', 'control plane REST URL(s), comma-separated, tried in order (e.g. http://127.0.0.1:8420)'))
    .addOption(opt('--server-grpc <addrs>', 'control plane gRPC host:port list, paired by position with --server'))
    .addOption(opt('--server-ca <file>', 'CA bundle (PEM) for TLS to the server (https:// URLs; it never makes an http:// URL acceptable); plaintext is allowed only to loopback or with --insecure'))
    .addOption(opt('--insecure', 'allow plaintext to a non-loopback server'))
    .addOption(opt('--token-file <file>', 'credential sent upstream (e.g. a projected service-account token); re-read when it changes'))
    .addOption(opt('--env <name>', 'environment layer chain to read (default: prod)'))
    .addOption(opt('--prefix <namespace>', 'namespace prefix this pod may read (repeatable or comma-separated)').argParser(collect))
    .addOption(opt('--prefetch <namespace/name>', 'item loaded before the agent reports ready (repeatable or comma-separated)').argParser(collect))
    .addOption(opt('--socket <path>', 'Unix socket path, in its own directory (default: /run/config-sidecar/agent.sock)'))
    .addOption(opt('--http-listen <host:port>', 'loopback TCP listener needing the pod token, or "off" (default: 127.0.0.1:8430)'))
    .addOption(opt('--admin-listen <host:port>', '/healthz /readyz /metrics listener; carries no data (default: 127.0.0.1:8431)'))
    .addOption(opt('--cache-ttl <duration>', 'backstop TTL while the stream is up (default: 5m)'))
    .addOption(opt('--cache-max-entries <n>', 'cache entry bound (default: 100000)'))
    .addOption(opt('--cache-max-bytes <size>', 'cache byte bound (default: derived from the memory limit, 64MiB without one; a value that cannot fit the limit is refused)'))
    .addOption(opt('--memory-limit <size>', 'container memory limit the cache, watch-stream and connection bounds and V8\'s heap are sized from: "auto" (the cgroup\'s), "none" or a size (default: auto)'))
    .addOption(opt('--max-stale <duration>', 'how long cached values are served while the server is unreachable (default: 1h)'))
    .addOption(opt('--refetch-jitter <duration>', 'upper bound of the random delay spreading refetches after a key rotation or resync (default: 1s)'))
    .addOption(opt('--agent-id <id>', 'id in the fleet view (GET /v1/agents); with a service-account token it must be the pod name (default: the token\'s pod name, else POD_NAME, else the hostname)'))
    .addOption(opt('--app-health-url <url>', 'probe this loopback URL every 2 s as the application\'s health signal for staged rollouts (2xx healthy); the application can also POST /v1/health to the agent'))
    .addOption(opt('--files-dir <dir>', 'directory for rendered files (default: /config-sidecar/files)'))
    .addOption(opt('--snapshot-dir <dir>', 'warm restart: keep a sealed snapshot of the served values and the applied position here, served stale-marked after a restart while the server is unreachable; an agent-private memory-backed volume (the injector mounts one). Off without it'))
    .addOption(opt('--snapshot-interval <duration>', 'rewrite the snapshot at most this often (deletions and revocations at once, and on SIGTERM) (default: 5s)'))
    .addOption(opt('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default: info)'))
    .addOption(opt('--otlp-endpoint <url>', 'OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces (or set OTEL_EXPORTER_OTLP_ENDPOINT); tracing is off (and not loaded) without either'))
    .addOption(opt('--trace-sample-ratio <ratio>', 'fraction of traces sampled, 0..1 (default: 0.1)'))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar agent --server http://127.0.0.1:8420 --server-grpc 127.0.0.1:8421 \\
      --token-file /var/run/secrets/tokens/config-sidecar --prefix production/ml-service \\
      --prefetch production/ml-service/db-password --socket /run/config-sidecar/agent.sock
  $ CONFIG_SIDECAR_SERVER=https://cs-1:8420,https://cs-2:8420 CONFIG_SIDECAR_SERVER_GRPC=cs-1:8421,cs-2:8421 \\
      CONFIG_SIDECAR_SERVER_CA=/etc/config-sidecar/ca.pem config-sidecar agent --config /etc/config-sidecar/agent.yaml
  $ curl --unix-socket /run/config-sidecar/agent.sock http://agent/v1/items/production/ml-service/db-password

Runtime: once its settings are valid, the process re-executes itself (same PID)
with node ${AGENT_NODE_FLAGS.join(' ')} and ${Object.entries(AGENT_ENV).map(([k, v]) => `${k}=${v}`).join(' ')},
chosen for a small footprint, and hands the new image the validated settings
(${HANDOFF_ENV}, set by the bin for itself), so the serving process does not
load the settings schema. A node flag you pass (or set in NODE_OPTIONS) and an
environment variable you set are kept as given; given all of them (and no
memory limit to size V8 for), or when execve would be refused (an environment
near a quarter of ulimit -s), the process runs as started (and says why).

SIGTERM or SIGINT stops accepting, drains in-flight requests, closes the stream,
zero-fills the cache and exits 0. A second signal, or a shutdown still running
10s after the signal, exits 1 at once.`,
    )
    .action(
      action(async (flags: Record<string, unknown>) => {
        // Written for this process (even refused by main.ts), or empty: this image is the re-executed one; it never
        // re-executes again. One written for another (copied from an agent's environment) does not stop the re-exec.
        const inherited = process.env[HANDOFF_ENV];
        const reexecuted = inherited !== undefined && (inherited === '' || handoffWrittenBy(inherited, processIdentity()));
        delete process.env[HANDOFF_ENV];
        const settings = await loadAgentSettings(flags);
        // A bound that cannot fit the memory limit exits 2 here, before anything binds.
        const { agentMemory, heapFlags } = await import('../agent/memory-budget.ts');
        const memory = agentMemory(settings);
        // One re-exec (process.execve keeps the PID the kubelet and the signals know) with the runtime settings, the
        // heap flags V8's old space needs to fit a memory limit (set at process start) and the validated settings,
        // which the new image takes without the schema (main.ts → agent-run.ts).
        const planWith = (handoff: string): ReexecPlan | undefined =>
          agentReexecPlan(
            { execPath: process.execPath, argv: process.argv, execArgv: process.execArgv, env: process.env },
            (execArgv) => heapFlags(memory.budget, execArgv, process.env.NODE_OPTIONS),
            { [HANDOFF_ENV]: handoff },
          );
        // Empty when too large (or no /proc): the new image then validates the settings itself.
        const handoff = encodeHandoff({ settings, flags }, processIdentity()) ?? '';
        let plan = !reexecuted && typeof process.execve === 'function' ? planWith(handoff) : undefined;
        // Node aborts the process when execve fails: a re-exec the kernel would refuse is not attempted (execve-room.ts),
        // and one that has room only without the handoff goes without it.
        const room = execveRoom();
        if (plan && handoff !== '' && execveProblem(plan, room) !== undefined) plan = planWith('');
        const problem = plan && execveProblem(plan, room);
        if (problem) {
          process.stderr.write(`config-sidecar: running without the runtime settings (${problem})\n`);
        } else if (plan && process.execve) {
          try {
            process.execve(plan.file, plan.args, plan.env);
          } catch (err) {
            // A node that throws rather than aborts: without the settings the agent still runs, only with a larger footprint.
            process.stderr.write(`config-sidecar: running without the runtime settings (${(err as Error).message})\n`);
          }
        }
        await runAgent(settings, flags, memory.memory);
      }),
    );
}

async function loadAgentSettings(flags: Record<string, unknown>): Promise<AgentSettings> {
  return (await import('../agent/agent-settings.ts')).loadAgentSettings(flags);
}
