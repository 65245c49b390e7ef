/**
 * One Watch stream: a start (now, a replay after a position, or a resync),
 * then live events, in revision order with no gap and no duplicate, through a
 * bounded queue. Live events are collected from the moment the stream
 * subscribes (before it reads the log), and deduplicated by revision after
 * replay, which closes the classic subscribe/replay race.
 *
 * Every log read is one snapshot carrying the compaction boundary, so a page
 * showing that the next revision the stream needs was compacted (retention ran
 * during the replay) turns into a ResyncRequired instead of a silent gap.
 *
 * The stream's position is the highest revision it has delivered or filtered
 * out, with that event's digest; heartbeats carry it as a bookmark, so a client
 * whose prefixes are quiet still advances and resumes without a resync.
 *
 * Backpressure: a message is handed to gRPC only while its writable accepts
 * more; otherwise it waits in the queue. A queue that would grow past the
 * bound ends the stream with RESOURCE_EXHAUSTED (the reader resumes from its
 * position), so server memory never grows with a slow reader.
 *
 * A stream costs little while it keeps up: its queue, live-while-starting
 * list and drain waiters exist only while used, and it has no timer of its
 * own (heartbeat-ticker.ts beats every stream from one timer). A periodic
 * heartbeat is skipped when an event sent since the last one already carried
 * the same bookmark.
 */
import { GrpcStatus, type GrpcStatusCode } from '../../shared/errors.ts';
import { namespaceMatcher } from '../../shared/paths.ts';
import type { LogPosition, StartFrom } from '../../shared/watch-proto.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { LogEvent } from '../control-plane.ts';
import type { LogPage } from '../store/store.ts';
import { encodeEvent, type EncodedEvent } from './event-codec.ts';
import { decideStart, startRevision } from './start-position.ts';

/** Events read from the log per query while replaying. */
export const REPLAY_PAGE = 500;

/** The part of a gRPC server call a stream writes to. */
export interface StreamSink {
  write(bytes: Buffer): boolean;
  once(event: 'drain', listener: () => void): unknown;
  /** Ends the call with a status (OK ends normally). */
  finish(code: GrpcStatusCode, details: string): void;
}

/** The log as a stream reads it: each call is one snapshot. */
export interface WatchLog {
  /** Events after `after` (at most `limit`), the log state and the digest at `after`. */
  page(after: number, limit: number): Promise<LogPage>;
  /** The log state and the digest of the newest event. */
  head(): Promise<LogPage>;
  /**
   * Prepares replayed events the stream will send (e.g. inline sealed values),
   * in one read for the page; returns them encoded, in order.
   */
  encode?(events: readonly LogEvent[]): Promise<EncodedEvent[]>;
}

export type EndReason = 'slow' | 'permission' | 'expired' | 'shutdown' | 'cancelled' | 'error';

export interface WatchStreamOptions {
  readonly id: number;
  readonly subject: string;
  readonly prefixes: readonly string[];
  readonly start: StartFrom;
  /** The store's environments, least to most specific (sent on Heartbeat and ResyncRequired). */
  readonly environments: readonly string[];
  readonly log: WatchLog;
  readonly sink: StreamSink;
  readonly bound: number;
  readonly heartbeatInterval: Milliseconds;
  /** Events per replay read. @default REPLAY_PAGE */
  readonly replayPage?: number;
  readonly onQueueDepth: (depth: number) => void;
  readonly onSent: () => void;
  /** Called for every item event this stream sends (secret deliveries are audited in aggregate). */
  readonly onDelivered?: (event: EncodedEvent) => void;
  readonly onEnd: (stream: WatchStream, reason: EndReason) => void;
}

type Position = Omit<LogPosition, 'storeId'>;

export class WatchStream {
  readonly id: number;
  readonly subject: string;
  readonly prefixes: readonly string[];
  readonly #o: WatchStreamOptions;
  readonly #matcher: (namespace: string) => boolean;
  #state: 'starting' | 'live' | 'ended' = 'starting';
  /** Live events under the prefixes that arrived while starting (created on the first). */
  #pendingLive: EncodedEvent[] | undefined;
  /** The newest live event offered while starting (matching or not): the bookmark once live. */
  #pendingHigh: Position = { revision: 0, digest: '' };
  /** Messages waiting for the writable to drain (created when it first refuses). */
  #queue: Buffer[] | undefined;
  #blocked = false;
  /** The highest revision delivered or filtered out, and its digest. */
  #position: Position = { revision: 0, digest: '' };
  #storeId = '';
  /** The set revision of a change set this stream has sent part of (0: none open). */
  #openSet = 0;
  #drainWaiters: Array<() => void> | undefined;
  /** The revision of the last event sent since the last periodic heartbeat (0: none). */
  #sentSinceBeat = 0;

  constructor(options: WatchStreamOptions) {
    this.#o = options;
    this.id = options.id;
    this.subject = options.subject;
    this.prefixes = options.prefixes;
    this.#matcher = namespaceMatcher(options.prefixes);
  }

  get ended(): boolean {
    return this.#state === 'ended';
  }

  /** The stream's bookmark (for tests and logs). */
  get position(): LogPosition {
    return { storeId: this.#storeId, ...this.#position };
  }

  matches(namespace: string | undefined): boolean {
    return namespace !== undefined && this.#matcher(namespace);
  }

  /**
   * Called by the fan-out, in revision order, for every committed event;
   * `forThisStream` false (a targeted event for other streams) only moves the bookmark.
   */
  offer(event: EncodedEvent, forThisStream = true): void {
    if (this.#state === 'ended') return;
    const matches = forThisStream && this.matches(event.namespace);
    if (this.#state === 'starting') {
      if (event.revision > this.#pendingHigh.revision) this.#pendingHigh = { revision: event.revision, digest: event.digest };
      if (!matches) return;
      this.#pendingLive ??= [];
      if (this.#pendingLive.length >= this.#o.bound) {
        this.end(GrpcStatus.RESOURCE_EXHAUSTED, `The watcher fell more than ${this.#o.bound} events behind; reconnect and resume.`, 'slow');
        return;
      }
      this.#pendingLive.push(event);
      this.#o.onQueueDepth(this.#pendingLive.length + (this.#queue?.length ?? 0));
      return;
    }
    if (event.revision <= this.#position.revision) return;
    this.#position = { revision: event.revision, digest: event.digest };
    if (matches) this.#send(event);
    else this.#closeSetFilteredOut(event.revision);
  }

  /**
   * A change set's last member fell outside this stream's prefixes after an
   * earlier member was sent: a bookmark at the set's revision tells the agent
   * the set is complete, so it applies its part now rather than at the next
   * heartbeat. The position already stands at that revision.
   */
  #closeSetFilteredOut(revision: number): void {
    if (this.#openSet === 0 || revision !== this.#openSet) return;
    this.#openSet = 0;
    this.#sendHeartbeat(revision);
  }

  /** Starts (now, replay or resync), then goes live. */
  async start(): Promise<void> {
    const { log } = this.#o;
    const at = startRevision(this.#o.start);
    const first = at === undefined ? await log.head() : await log.page(at, this.#o.replayPage ?? REPLAY_PAGE);
    if (this.ended) return;
    this.#storeId = first.storeId;
    const decision = decideStart(this.#o.start, first);
    if (decision.kind === 'now') {
      this.#position = { revision: first.revision, digest: first.afterDigest ?? '' };
      this.#sendHeartbeat(first.revision);
    } else if (decision.kind === 'resync') {
      await this.#resync(decision.reason);
    } else {
      this.#position = { revision: decision.revision, digest: decision.digest };
      this.#sendHeartbeat(first.revision);
      if (!(await this.#replay(first))) return;
    }
    if (this.ended) return;
    this.#state = 'live';
    const pending = this.#pendingLive ?? [];
    this.#pendingLive = undefined;
    for (const event of pending) this.offer(event);
    // Everything up to the newest event offered while starting was replayed or
    // just sent (or is outside the prefixes), so it is a safe bookmark.
    if (this.#pendingHigh.revision > this.#position.revision) this.#position = this.#pendingHigh;
  }

  /** Sends the pages after the position (or resyncs when one shows a gap); false when the stream ended. */
  async #replay(firstPage: LogPage): Promise<boolean> {
    const limit = this.#o.replayPage ?? REPLAY_PAGE;
    let page = firstPage;
    for (;;) {
      if (page.storeId !== this.#storeId || page.compactedThrough > this.#position.revision) {
        // Retention (or a restore) removed the next revision this stream needs while it replayed.
        await this.#resync(
          page.storeId !== this.#storeId
            ? `the store changed identity during the replay (now ${page.storeId})`
            : `revisions up to ${page.compactedThrough} were compacted during the replay (the stream had reached ${this.#position.revision})`,
        );
        return !this.ended;
      }
      const wanted = page.events.filter((event) => this.matches(event.namespace));
      const { log } = this.#o;
      const encoded = log.encode ? await log.encode(wanted) : wanted.map((e) => encodeEvent(e));
      if (this.ended) return false;
      let next = 0;
      for (const event of page.events) {
        const matches = this.matches(event.namespace);
        if (matches) {
          await this.#whenWritable();
          if (this.ended) return false;
          this.#send(encoded[next++] as EncodedEvent);
        }
        this.#position = { revision: event.revision, digest: event.digest };
        if (!matches) this.#closeSetFilteredOut(event.revision);
      }
      if (page.events.length < limit) return true;
      page = await this.#o.log.page(this.#position.revision, limit);
      if (this.ended) return false;
    }
  }

  /** Sends ResyncRequired and continues from the newest revision (read in one snapshot with its digest). */
  async #resync(reason: string): Promise<void> {
    const head = await this.#o.log.head();
    if (this.ended) return;
    this.#storeId = head.storeId;
    this.#position = { revision: head.revision, digest: head.afterDigest ?? '' };
    this.#enqueue(
      encodeEvent({
        type: 'resyncRequired',
        revision: head.revision,
        digest: this.#position.digest,
        oldestRevision: head.compactedThrough + 1,
        currentRevision: head.revision,
        reason,
        storeId: head.storeId,
        environments: this.#o.environments,
      }).bytes,
    );
  }

  #heartbeatBytes(currentRevision: number): Buffer {
    return encodeEvent({
      type: 'heartbeat',
      revision: this.#position.revision,
      digest: this.#position.digest,
      currentRevision: Math.max(currentRevision, this.#position.revision),
      intervalMs: this.#o.heartbeatInterval,
      storeId: this.#storeId,
      environments: this.#o.environments,
    }).bytes;
  }

  #sendHeartbeat(currentRevision: number): void {
    this.#enqueue(this.#heartbeatBytes(currentRevision));
  }

  /**
   * The periodic heartbeat (heartbeat-ticker.ts), once live. The fan-out
   * offers every event to every stream in order, so the position is
   * everything this stream has seen. Streams at the same bookmark share one
   * encoding through `shared` (streams of one service share their
   * environments and interval).
   */
  beat(shared?: Map<string, Buffer>): void {
    if (this.#state !== 'live') return;
    const sent = this.#sentSinceBeat;
    this.#sentSinceBeat = 0;
    // An event went out since the last beat and nothing was filtered out after
    // it: the agent heard from this stream within the interval (it declares a
    // stream dead after 3) and the beat's bookmark would be that event's
    // revision, so the beat says nothing new. Skipping it keeps the core for
    // the fan-out while writes flow (with 5,000 agents at the 1 s default,
    // heartbeats are 5,000 HTTP/2 writes a second, as many as a write to everyone).
    if (sent !== 0 && sent === this.#position.revision) return;
    const key = `${this.#storeId}/${this.#position.revision}/${this.#position.digest}`;
    let bytes = shared?.get(key);
    if (!bytes) {
      bytes = this.#heartbeatBytes(this.#position.revision);
      shared?.set(key, bytes);
    }
    this.#enqueue(bytes);
  }

  #send(event: EncodedEvent): void {
    this.#sentSinceBeat = event.revision;
    this.#openSet = event.setRevision !== undefined && event.setRevision > event.revision ? event.setRevision : 0;
    this.#enqueue(event.bytes);
    this.#o.onDelivered?.(event);
  }

  #whenWritable(): Promise<void> {
    if (!this.#blocked) return Promise.resolve();
    return new Promise((resolve) => (this.#drainWaiters ??= []).push(resolve));
  }

  #enqueue(bytes: Buffer): void {
    if (this.ended) return;
    // The usual case: the writable accepts, nothing waits, no queue is made.
    if (!this.#blocked && !this.#queue?.length) {
      this.#write(bytes);
      return;
    }
    this.#queue ??= [];
    if (this.#queue.length >= this.#o.bound) {
      this.end(GrpcStatus.RESOURCE_EXHAUSTED, `The watcher fell more than ${this.#o.bound} events behind; reconnect and resume.`, 'slow');
      return;
    }
    this.#queue.push(bytes);
    this.#o.onQueueDepth(this.#queue.length + (this.#pendingLive?.length ?? 0));
    this.#flush();
  }

  #write(bytes: Buffer): void {
    this.#o.onSent();
    if (this.#o.sink.write(bytes)) return;
    this.#blocked = true;
    this.#o.sink.once('drain', () => {
      this.#blocked = false;
      this.#flush();
      if (!this.#blocked && this.#drainWaiters) {
        const waiters = this.#drainWaiters;
        this.#drainWaiters = undefined;
        for (const resolve of waiters) resolve();
      }
    });
  }

  #flush(): void {
    while (!this.#blocked && this.#queue && this.#queue.length > 0 && !this.ended) this.#write(this.#queue.shift() as Buffer);
    if (this.#queue?.length === 0) this.#queue = undefined;
  }

  /** Ends the stream once; later calls are harmless. */
  end(code: GrpcStatusCode, details: string, reason: EndReason): void {
    if (this.#state === 'ended') return;
    this.#state = 'ended';
    this.#queue = undefined;
    this.#pendingLive = undefined;
    const waiters = this.#drainWaiters ?? [];
    this.#drainWaiters = undefined;
    for (const resolve of waiters) resolve();
    this.#o.onEnd(this, reason);
    if (reason !== 'cancelled') this.#o.sink.finish(code, details);
  }
}
