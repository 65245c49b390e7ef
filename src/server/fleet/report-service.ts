/**
 * The gRPC FleetService: authenticates each Report from its metadata (as
 * Watch does) and hands it to the agent registry. A refusal is a gRPC status
 * from the one error table; nothing here writes the event log.
 */
import type * as grpc from '@grpc/grpc-js';
import { toAppError } from '../../shared/errors.ts';
import { ackToWire, fleetServiceDefinition, reportFromWire } from '../../shared/fleet-proto.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import type { ServerMetrics } from '../metrics.ts';
import type { AgentRegistry } from './agent-registry.ts';

export interface ReportServiceOptions {
  readonly registry: AgentRegistry;
  readonly authenticator: Authenticator;
  readonly logger: Logger;
  readonly metrics: ServerMetrics;
}

export function createReportService(options: ReportServiceOptions): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
  const report: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
    void (async () => {
      const authorization = call.metadata.get('authorization')[0];
      const principal = await options.authenticator.authenticate(typeof authorization === 'string' ? authorization : undefined);
      const ack = await options.registry.report(principal, reportFromWire(call.request as Parameters<typeof reportFromWire>[0]));
      options.metrics.agentReports?.inc({ outcome: 'ok' });
      return ack;
    })().then(
      (ack) => callback(null, ackToWire(ack)),
      (err: unknown) => {
        const appError = toAppError(err);
        options.metrics.agentReports?.inc({ outcome: appError.code });
        if (appError.httpStatus >= 500) options.logger.error({ code: appError.code, err: appError.message }, 'agent report failed');
        else if (appError.code !== 'rate_limited') options.logger.info({ code: appError.code, err: appError.message }, 'agent report refused');
        callback({ code: appError.grpcStatus, details: appError.message });
      },
    );
  };
  return { definition: fleetServiceDefinition(), implementation: { Report: report } };
}
