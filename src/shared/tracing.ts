/**
 * OpenTelemetry tracing, off unless configured. The SDK costs ~13 MiB and ~85 ms
 * at start, so it is imported only when an endpoint is set; otherwise every
 * call site gets the no-op tracer from @opentelemetry/api (which sdk-node
 * depends on) at zero cost.
 */
import { trace, type Tracer } from '@opentelemetry/api';
import { tracingRequested } from './otlp-endpoint.ts';

export interface TracingSettings {
  /** OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces. Unset: OTEL_EXPORTER_OTLP_* from the environment, else tracing off. */
  readonly endpoint?: string | undefined;
  /** Fraction of root traces sampled, 0..1. @default 0.1 */
  readonly sampleRatio: number;
  readonly serviceName: string;
}

export interface TracingHandle {
  readonly tracer: Tracer;
  shutdown(): Promise<void>;
}

export async function startTracing(settings: TracingSettings): Promise<TracingHandle> {
  if (!tracingRequested(settings.endpoint)) {
    return { tracer: trace.getTracer(settings.serviceName), shutdown: async () => {} };
  }
  const [{ NodeSDK }, { OTLPTraceExporter }, { ParentBasedSampler, TraceIdRatioBasedSampler }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/sdk-trace-base'),
  ]);
  const sdk = new NodeSDK({
    serviceName: settings.serviceName,
    // Without a flag value the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT itself, with the standard semantics.
    traceExporter: new OTLPTraceExporter(settings.endpoint ? { url: settings.endpoint } : {}),
    // Parent-based: a caller's sampled trace context is honoured.
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    instrumentations: [],
  });
  sdk.start();
  return { tracer: trace.getTracer(settings.serviceName), shutdown: () => sdk.shutdown() };
}
