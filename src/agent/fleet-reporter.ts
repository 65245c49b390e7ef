/**
 * Reports this agent's position to the server's FleetService (beside the
 * Watch stream, never through it): soon after each applied change, bounded
 * to one report per REPORT_MIN_GAP_MS, and otherwise every interval the
 * server asks for, so the fleet view sees it converge within a second and
 * drops it only after it is gone. Failures back off; a server without the
 * service (older) is asked again rarely. Never blocks applying events.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { Backoff } from '../shared/backoff.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { GrpcStatus } from '../shared/errors.ts';
import { ackFromWire, fleetClientConstructor, reportToWire, type AgentReport } from '../shared/fleet-proto.ts';
import type { Logger } from '../shared/logger.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { TokenSource } from './token-source.ts';

/** Reports closer together than this are merged (the server refuses faster ones). */
export const REPORT_MIN_GAP_MS: Milliseconds = 150;
/** Until the server's first answer says otherwise. */
export const REPORT_DEFAULT_INTERVAL_MS: Milliseconds = 10_000;
export const REPORT_DEADLINE_MS: Milliseconds = 5_000;
/** How long to wait before asking a server that lacks FleetService again. */
export const REPORT_UNIMPLEMENTED_RETRY_MS: Milliseconds = 10 * 60_000;

export interface FleetReporterOptions {
  readonly addresses: readonly string[];
  readonly caFile?: string | undefined;
  readonly token: TokenSource;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly agentId: string;
  readonly prefixes: () => readonly string[];
  readonly state: () => Omit<AgentReport, 'agentId' | 'prefixes'>;
}

type ReportClient = grpc.Client & { Report(req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void): void };

export class FleetReporter {
  readonly #o: FleetReporterOptions;
  readonly #clients: ReportClient[];
  readonly #backoff = new Backoff({ baseMs: 500, capMs: 30_000 });
  #index = 0;
  #timer: TimerHandle | undefined;
  #inFlight = false;
  #dirty = false;
  #lastSent = -Infinity;
  #intervalMs = REPORT_DEFAULT_INTERVAL_MS;
  #closed = false;
  #reported = 0;

  constructor(options: FleetReporterOptions) {
    this.#o = options;
    const Ctor = fleetClientConstructor();
    const credentials = options.caFile ? grpc.credentials.createSsl(readFileSync(options.caFile)) : grpc.credentials.createInsecure();
    this.#clients = options.addresses.map((address) => new Ctor(address, credentials) as unknown as ReportClient);
  }

  /** Reports accepted by the server (tests, /debug/state). */
  get reported(): number {
    return this.#reported;
  }

  start(): void {
    this.changed();
  }

  /** Something worth reporting changed (applied revision, stream state): report soon. */
  changed(): void {
    if (this.#closed) return;
    if (this.#inFlight) {
      this.#dirty = true;
      return;
    }
    const wait = Math.max(0, this.#lastSent + REPORT_MIN_GAP_MS - this.#o.clock.now());
    this.#schedule(wait);
  }

  #schedule(delay: Milliseconds): void {
    this.#timer?.cancel();
    this.#timer = this.#o.clock.setTimeout(() => this.#send(), delay);
  }

  #send(): void {
    if (this.#closed || this.#inFlight) return;
    this.#inFlight = true;
    this.#dirty = false;
    this.#lastSent = this.#o.clock.now();
    const state = this.#o.state();
    const report: AgentReport = { agentId: this.#o.agentId, prefixes: this.#o.prefixes(), ...state };
    const metadata = new grpc.Metadata();
    const token = this.#o.token.current();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    const client = this.#clients[this.#index] as ReportClient;
    client.Report(reportToWire(report), metadata, { deadline: Date.now() + REPORT_DEADLINE_MS }, (err, res) => {
      this.#inFlight = false;
      if (this.#closed) return;
      if (err) {
        this.#index = (this.#index + 1) % this.#clients.length;
        if (err.code === GrpcStatus.UNIMPLEMENTED) {
          this.#o.logger.info('the server has no FleetService (older version); fleet reports paused');
          this.#schedule(REPORT_UNIMPLEMENTED_RETRY_MS);
          return;
        }
        this.#o.logger.warn({ code: err.code, details: err.details }, 'fleet report failed; retrying');
        this.#schedule(this.#backoff.next());
        return;
      }
      this.#backoff.reset();
      this.#reported += 1;
      const ack = ackFromWire(res as Parameters<typeof ackFromWire>[0]);
      if (ack.nextReportMs > 0) this.#intervalMs = ack.nextReportMs;
      if (this.#dirty) this.#schedule(REPORT_MIN_GAP_MS);
      else this.#schedule(this.#intervalMs);
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer?.cancel();
    for (const client of this.#clients) client.close();
  }
}
