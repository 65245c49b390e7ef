/**
 * Where traces go: `--otlp-endpoint` (CONFIG_SIDECAR_OTLP_ENDPOINT, the full
 * OTLP/HTTP traces URL) on every component, or OpenTelemetry's own
 * environment variables, which the exporter reads itself:
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
 * (base URL; `/v1/traces` is appended). Without any of them tracing is off and
 * its SDK is never loaded. Kept free of imports so the check costs nothing.
 */
export const OTLP_ENDPOINT_FLAG = '--otlp-endpoint';
export const OTEL_STANDARD_ENDPOINT_VARS = ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT'] as const;

/** True when a flag value or one of OpenTelemetry's standard endpoint variables asks for tracing. */
export function tracingRequested(endpoint: string | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(endpoint) || OTEL_STANDARD_ENDPOINT_VARS.some((name) => Boolean(env[name]));
}
