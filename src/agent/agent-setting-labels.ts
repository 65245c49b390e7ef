/**
 * The names the agent's settings go by in messages: camelCase key (as in the
 * config file) → `--flag (CONFIG_SIDECAR_FLAG)`. Apart from the schema
 * (agent-settings.ts) so the running agent can name a setting in an error
 * without loading zod.
 */
import { flagLabels } from '../shared/settings.ts';

/** camelCase key → `--flag (ENV)` for error messages. */
const FLAGS = [
  'config',
  'server',
  'server-grpc',
  'server-ca',
  'insecure',
  'token-file',
  'env',
  'prefix',
  'prefetch',
  'socket',
  'http-listen',
  'admin-listen',
  'cache-ttl',
  'cache-max-entries',
  'cache-max-bytes',
  'max-stale',
  'refetch-jitter',
  'log-level',
  'otlp-endpoint',
  'trace-sample-ratio',
  'files-dir',
  'snapshot-dir',
  'snapshot-interval',
  'memory-limit',
  'agent-id',
  'app-health-url',
] as const;

const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());

export const AGENT_SETTING_LABELS: Readonly<Record<string, string>> = flagLabels({
  ...Object.fromEntries(FLAGS.map((flag) => [camel(flag), `--${flag}`])),
  files: 'files (config file key)',
});
