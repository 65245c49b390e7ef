/**
 * One Watch stream: replay from the log, then live events, in revision order
 * with no gap and no duplicate, through a bounded queue. Live events are
 * collected from the moment the stream subscribes (before it reads the
 * current revision), and deduplicated by revision after replay, which closes
 * the classic subscribe/replay race.
 *
 * Backpressure: a message is handed to gRPC only while its writable accepts
 * more; otherwise it waits in the queue. A queue that would grow past the
 * bound ends the stream with RESOURCE_EXHAUSTED (the reader resumes from its
 * revision), so server memory never grows with a slow reader.
 */
import { GrpcStatus, type GrpcStatusCode } from '../../shared/errors.ts';
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import { namespaceMatchesAny } from '../../shared/paths.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { ControlPlane } from '../control-plane.ts';
import { encodeEvent, type EncodedEvent } from './event-codec.ts';

/** Events read from the log per query while replaying. */
const REPLAY_PAGE = 500;

/** The part of a gRPC server call a stream writes to. */
export interface StreamSink {
  write(bytes: Buffer): boolean;
  once(event: 'drain', listener: () => void): unknown;
  /** Ends the call with a status (OK ends normally). */
  finish(code: GrpcStatusCode, details: string): void;
}

export type EndReason = 'slow' | 'permission' | 'expired' | 'shutdown' | 'cancelled' | 'error';

export interface WatchStreamOptions {
  readonly id: number;
  readonly subject: string;
  readonly prefixes: readonly string[];
  readonly sinceRevision: number;
  readonly sink: StreamSink;
  readonly bound: number;
  readonly heartbeatInterval: Milliseconds;
  readonly clock: Clock;
  /** The newest revision the hub has dispatched (for heartbeats). */
  readonly latestRevision: () => number;
  readonly onQueueDepth: (depth: number) => void;
  readonly onSent: () => void;
  readonly onEnd: (stream: WatchStream, reason: EndReason) => void;
}

export class WatchStream {
  readonly id: number;
  readonly subject: string;
  readonly prefixes: readonly string[];
  readonly #o: WatchStreamOptions;
  #state: 'starting' | 'live' | 'ended' = 'starting';
  /** Live events that arrived while replaying. */
  #pendingLive: EncodedEvent[] = [];
  #queue: Buffer[] = [];
  #blocked = false;
  #lastRevision = 0;
  /** The set revision of a change set this stream has sent part of (0: none open). */
  #openSet = 0;
  #heartbeat: TimerHandle | undefined;
  #drainWaiters: Array<() => void> = [];

  constructor(options: WatchStreamOptions) {
    this.#o = options;
    this.id = options.id;
    this.subject = options.subject;
    this.prefixes = options.prefixes;
  }

  get ended(): boolean {
    return this.#state === 'ended';
  }

  matches(namespace: string | undefined): boolean {
    return namespace !== undefined && namespaceMatchesAny(namespace, this.prefixes);
  }

  /** Called by the hub, synchronously and in revision order, for every committed event. */
  offer(event: EncodedEvent): void {
    if (this.#state === 'ended') return;
    if (!this.matches(event.namespace)) {
      if (this.#state === 'live') this.#closeSetFilteredOut(event);
      return;
    }
    if (this.#state === 'starting') {
      if (this.#pendingLive.length >= this.#o.bound) {
        this.end(GrpcStatus.RESOURCE_EXHAUSTED, `The watcher fell more than ${this.#o.bound} events behind; reconnect with since_revision.`, 'slow');
        return;
      }
      this.#pendingLive.push(event);
      this.#o.onQueueDepth(this.#pendingLive.length + this.#queue.length);
      return;
    }
    if (event.revision <= this.#lastRevision) return;
    this.#lastRevision = event.revision;
    this.#openSet = event.setRevision !== undefined && event.setRevision > event.revision ? event.setRevision : 0;
    this.#enqueue(event.bytes);
  }

  /**
   * A change set's last member fell outside this stream's prefixes after an
   * earlier member was sent: a bookmark at the set's revision tells the agent
   * the set is complete, so it applies its part now rather than at the next heartbeat.
   */
  #closeSetFilteredOut(event: EncodedEvent): void {
    if (this.#openSet === 0 || event.revision !== this.#openSet) return;
    this.#openSet = 0;
    this.#lastRevision = Math.max(this.#lastRevision, event.revision);
    this.#enqueue(encodeEvent({ type: 'heartbeat', revision: event.revision, currentRevision: event.revision, intervalMs: this.#o.heartbeatInterval }).bytes);
  }

  /** Replays the log after `sinceRevision` (or resyncs), then goes live. */
  async start(controlPlane: ControlPlane, currentRevision: number, oldestRetained: number): Promise<void> {
    const since = this.#o.sinceRevision;
    const resync = since > 0 && since < oldestRetained - 1;
    const startAt = since === 0 || resync ? currentRevision : since;
    this.#enqueue(encodeEvent({ type: 'heartbeat', revision: startAt, currentRevision, intervalMs: this.#o.heartbeatInterval }).bytes);
    this.#lastRevision = startAt;
    if (resync) {
      this.#enqueue(
        encodeEvent({
          type: 'resyncRequired',
          revision: currentRevision,
          oldestRevision: oldestRetained,
          currentRevision,
          reason: `since_revision ${since} is older than the retained log (oldest ${oldestRetained})`,
        }).bytes,
      );
    } else if (since > 0) {
      for (;;) {
        const page = await controlPlane.eventsAfter(this.#lastRevision, REPLAY_PAGE);
        if (this.ended) return;
        for (const event of page) {
          this.#lastRevision = event.revision;
          const setRevision = 'setRevision' in event ? (event.setRevision ?? 0) : 0;
          if (!namespaceMatchesAny(event.namespace, this.prefixes)) {
            if (this.#openSet !== 0 && event.revision === this.#openSet) {
              this.#openSet = 0;
              this.#enqueue(encodeEvent({ type: 'heartbeat', revision: event.revision, currentRevision: event.revision, intervalMs: this.#o.heartbeatInterval }).bytes);
            }
            continue;
          }
          await this.#whenWritable();
          if (this.ended) return;
          this.#openSet = setRevision > event.revision ? setRevision : 0;
          this.#enqueue(encodeEvent(event).bytes);
        }
        if (page.length < REPLAY_PAGE) break;
      }
    }
    if (this.ended) return;
    this.#state = 'live';
    const pending = this.#pendingLive;
    this.#pendingLive = [];
    for (const event of pending) this.offer(event);
    this.#scheduleHeartbeat();
  }

  #scheduleHeartbeat(): void {
    this.#heartbeat = this.#o.clock.setTimeout(() => {
      if (this.ended) return;
      // Every event up to latestRevision has already been offered (the hub dispatches synchronously), so it is a safe bookmark.
      const latest = Math.max(this.#o.latestRevision(), this.#lastRevision);
      this.#lastRevision = latest;
      this.#enqueue(encodeEvent({ type: 'heartbeat', revision: latest, currentRevision: latest, intervalMs: this.#o.heartbeatInterval }).bytes);
      this.#scheduleHeartbeat();
    }, this.#o.heartbeatInterval);
  }

  #whenWritable(): Promise<void> {
    if (!this.#blocked) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  #enqueue(bytes: Buffer): void {
    if (this.ended) return;
    if (this.#queue.length >= this.#o.bound) {
      this.end(GrpcStatus.RESOURCE_EXHAUSTED, `The watcher fell more than ${this.#o.bound} events behind; reconnect with since_revision.`, 'slow');
      return;
    }
    this.#queue.push(bytes);
    this.#o.onQueueDepth(this.#queue.length + this.#pendingLive.length);
    this.#flush();
  }

  #flush(): void {
    while (!this.#blocked && this.#queue.length > 0 && !this.ended) {
      const bytes = this.#queue.shift() as Buffer;
      this.#o.onSent();
      if (!this.#o.sink.write(bytes)) {
        this.#blocked = true;
        this.#o.sink.once('drain', () => {
          this.#blocked = false;
          this.#flush();
          if (!this.#blocked) for (const resolve of this.#drainWaiters.splice(0)) resolve();
        });
      }
    }
  }

  /** Ends the stream once; later calls are harmless. */
  end(code: GrpcStatusCode, details: string, reason: EndReason): void {
    if (this.#state === 'ended') return;
    this.#state = 'ended';
    this.#heartbeat?.cancel();
    this.#queue = [];
    this.#pendingLive = [];
    for (const resolve of this.#drainWaiters.splice(0)) resolve();
    this.#o.onEnd(this, reason);
    if (reason !== 'cancelled') this.#o.sink.finish(code, details);
  }
}
