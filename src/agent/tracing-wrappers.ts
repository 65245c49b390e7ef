/**
 * OpenTelemetry spans for cache misses and upstream calls, wrapped around the
 * loader and the upstream client only when tracing is configured, so an agent
 * without `--otlp-endpoint` runs the bare functions (chosen once at start).
 * Attributes name items, never values.
 */
import type { Span, Tracer } from '@opentelemetry/api';
import { AppError } from '../shared/errors.ts';
import type { Upstream } from './upstream.ts';
import type { Loader } from './value-cache.ts';

/** `SpanStatusCode.ERROR`, without loading the API module's value exports for one constant. */
const SPAN_STATUS_ERROR = 2;

function traced<T>(tracer: Tracer, name: string, attributes: Record<string, string>, run: () => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span: Span) => {
    try {
      return await run();
    } catch (err) {
      span.setStatus({ code: SPAN_STATUS_ERROR, message: err instanceof AppError ? err.code : 'error' });
      throw err;
    } finally {
      span.end();
    }
  });
}

export function traceLoader(tracer: Tracer, loader: Loader): Loader {
  return (ref, env, signal) =>
    traced(tracer, 'agent.cache_miss', { 'config_sidecar.namespace': ref.namespace, 'config_sidecar.name': ref.name, 'config_sidecar.env': env }, () => loader(ref, env, signal));
}

export function traceUpstream(tracer: Tracer, upstream: Upstream): Upstream {
  return {
    fetchEnvelope: (ref, env, signal) =>
      traced(tracer, 'agent.upstream.envelope', { 'config_sidecar.namespace': ref.namespace, 'config_sidecar.name': ref.name }, () => upstream.fetchEnvelope(ref, env, signal)),
    fetchRingEnvelope: (ref, env, signal) =>
      traced(tracer, 'agent.upstream.ring_envelope', { 'config_sidecar.namespace': ref.namespace, 'config_sidecar.name': ref.name }, () => upstream.fetchRingEnvelope(ref, env, signal)),
    fetchDeks: (namespace, publicKey, signal) =>
      traced(tracer, 'agent.upstream.deks', { 'config_sidecar.namespace': namespace }, () => upstream.fetchDeks(namespace, publicKey, signal)),
    close: () => upstream.close(),
  };
}
