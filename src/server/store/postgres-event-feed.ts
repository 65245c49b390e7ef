/**
 * Cross-replica delivery of committed events on PostgreSQL. Every write that
 * takes a revision sends `NOTIFY config_sidecar_events` inside its
 * transaction (PostgreSQL delivers it only on COMMIT); each replica LISTENs on
 * one dedicated connection and, when woken, reads the event log after the
 * last revision it delivered, in revision order. The notification is only a
 * wake-up and the log is the truth: a lost notification (LISTEN connection
 * down, replica busy) delays an event until the next read, never loses it. A
 * periodic catch-up read covers a connection that dropped silently, and the
 * LISTEN connection is health-checked and re-established with backoff.
 *
 * Revisions are committed as a gap-free prefix (the counter row serialises
 * writers to COMMIT), so "every event after the last delivered one" read in
 * one snapshot is exactly the next contiguous run.
 */
import pg from 'pg';
import { Backoff } from '../../shared/backoff.ts';
import { systemClock, type Clock, type TimerHandle } from '../../shared/clock.ts';
import { describeError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { LogEvent } from '../control-plane.ts';
import type { CommittedEventFeed, CommittedListener, EventsLost } from './committed-feed.ts';

export const EVENTS_CHANNEL = 'config_sidecar_events';
/** `application_name` of the LISTEN connection, so operators can tell it apart in pg_stat_activity. */
export const LISTEN_APPLICATION_NAME = 'config-sidecar-listen';
/** How often a replica reads the log even without a notification (covers a dropped LISTEN connection). */
export const CATCH_UP_INTERVAL_MS: Milliseconds = 1_000;
/** Longest wait between attempts to re-establish the LISTEN connection. */
export const LISTEN_RECONNECT_CAP_MS: Milliseconds = 5_000;
/** Connecting, and the health query on the LISTEN connection, give up after this long. */
export const LISTEN_TIMEOUT_MS: Milliseconds = 5_000;
/** Events read per query while catching up. */
const CATCH_UP_PAGE = 1_000;

export interface LogPage {
  /** Events with revision > the requested one, ascending. */
  readonly events: readonly LogEvent[];
  /** From the same snapshot: revisions up to this one were compacted away. */
  readonly compactedThrough: number;
}

export interface PgEventFeedOptions {
  /** For the dedicated LISTEN connection. */
  readonly connection: pg.ClientConfig;
  /** Reads one page of the log after `after` in one snapshot (through the store's pool). */
  readonly readPage: (after: number, limit: number) => Promise<LogPage>;
  /** The newest revision at open; events after it are delivered. */
  readonly startAfter: number;
  readonly logger?: Logger | undefined;
  /** Drives the catch-up and reconnect timers (liveness only, never the order of events). */
  readonly clock?: Clock | undefined;
  readonly catchUpIntervalMs?: Milliseconds | undefined;
}

function noop(): void {}

export class PgEventFeed implements CommittedEventFeed {
  readonly #o: PgEventFeedOptions;
  readonly #clock: Clock;
  readonly #listeners = new Set<CommittedListener>();
  readonly #lostListeners = new Set<(lost: EventsLost) => void>();
  readonly #backoff = new Backoff({ capMs: LISTEN_RECONNECT_CAP_MS });
  #delivered: number;
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  #listen: { client: pg.Client; drop: (err?: unknown) => void } | undefined;
  #connecting = false;
  #tick: TimerHandle | undefined;
  #reconnect: TimerHandle | undefined;
  #listenDown = false;
  #readsFailing = false;
  #closed = false;

  constructor(options: PgEventFeedOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#delivered = options.startAfter;
  }

  /** Opens the LISTEN connection (in the background) and starts the catch-up timer. */
  start(): void {
    void this.#connect();
    this.#scheduleTick();
  }

  /** The newest revision handed to listeners. */
  get deliveredRevision(): number {
    return this.#delivered;
  }

  /** True while the LISTEN connection is up (for readiness and tests). */
  get listening(): boolean {
    return this.#listen !== undefined;
  }

  subscribe(listener: CommittedListener): () => void {
    const slot: CommittedListener = (events) => listener(events);
    this.#listeners.add(slot);
    return () => {
      this.#listeners.delete(slot);
    };
  }

  onEventsLost(listener: (lost: EventsLost) => void): () => void {
    const slot = (lost: EventsLost): void => listener(lost);
    this.#lostListeners.add(slot);
    return () => {
      this.#lostListeners.delete(slot);
    };
  }

  /**
   * Reads and delivers everything committed so far. Resolves after a read that
   * began after this call, so a writer awaiting it knows its own events were
   * delivered. Reads never overlap; callers arriving while one waits share it.
   */
  sync(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#queued) return this.#queued;
    const previous = this.#running ?? Promise.resolve();
    const pass: Promise<void> = previous
      .catch(noop)
      .then(() => {
        this.#queued = undefined;
        this.#running = pass;
        return this.#readAll();
      })
      .finally(() => {
        if (this.#running === pass) this.#running = undefined;
      });
    this.#queued = pass;
    return pass;
  }

  async #readAll(): Promise<void> {
    for (;;) {
      if (this.#closed) return;
      let page: LogPage;
      try {
        page = await this.#o.readPage(this.#delivered, CATCH_UP_PAGE);
      } catch (err) {
        if (!this.#readsFailing) {
          this.#readsFailing = true;
          const cause = (err as { cause?: unknown }).cause;
          this.#o.logger?.warn(
            { err: describeError(err), cause: cause === undefined ? undefined : describeError(cause), deliveredRevision: this.#delivered },
            'reading the event log failed; retrying on the next wake-up or catch-up',
          );
        }
        throw err;
      }
      if (this.#readsFailing) {
        this.#readsFailing = false;
        this.#o.logger?.info({ deliveredRevision: this.#delivered }, 'reading the event log works again; catching up');
      }
      if (page.compactedThrough > this.#delivered) {
        // Only when this replica was cut off for longer than the retention
        // window while others kept writing: those events no longer exist.
        this.#o.logger?.error(
          { deliveredRevision: this.#delivered, compactedThrough: page.compactedThrough },
          'events were compacted before this replica delivered them; ending its watch streams so agents resume (and resync)',
        );
        const lost: EventsLost = { deliveredRevision: this.#delivered, compactedThrough: page.compactedThrough };
        this.#delivered = page.compactedThrough;
        for (const listener of [...this.#lostListeners]) {
          try {
            listener(lost);
          } catch (err) {
            this.#o.logger?.error({ err: describeError(err) }, 'an events-lost listener failed');
          }
        }
      }
      const fresh = page.events.filter((event) => event.revision > this.#delivered);
      if (fresh.length > 0) {
        this.#delivered = (fresh[fresh.length - 1] as LogEvent).revision;
        for (const listener of [...this.#listeners]) {
          try {
            listener(fresh);
          } catch (err) {
            this.#o.logger?.error({ err: describeError(err), revision: fresh[0]?.revision }, 'a commit listener failed');
          }
        }
      }
      if (page.events.length < CATCH_UP_PAGE) return;
    }
  }

  #scheduleTick(): void {
    if (this.#closed) return;
    this.#tick = this.#clock.setTimeout(() => {
      void this.sync().catch(noop);
      this.#checkListen();
      this.#scheduleTick();
    }, this.#o.catchUpIntervalMs ?? CATCH_UP_INTERVAL_MS);
  }

  /**
   * A LISTEN connection can die without an error reaching us (half-open TCP);
   * a cheap query proves it alive. Without one and with no attempt pending
   * (a reconnect that raced a connect in progress), start one.
   */
  #checkListen(): void {
    const listen = this.#listen;
    if (!listen) {
      if (!this.#connecting && !this.#reconnect) this.#scheduleReconnect();
      return;
    }
    listen.client.query('SELECT 1').catch((err: unknown) => listen.drop(err));
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnect) return;
    this.#reconnect = this.#clock.setTimeout(() => {
      this.#reconnect = undefined;
      void this.#connect();
    }, this.#backoff.next());
  }

  async #connect(): Promise<void> {
    if (this.#closed || this.#listen || this.#connecting) return;
    this.#connecting = true;
    const client = new pg.Client({
      ...this.#o.connection,
      application_name: LISTEN_APPLICATION_NAME,
      keepAlive: true,
      connectionTimeoutMillis: LISTEN_TIMEOUT_MS,
      query_timeout: LISTEN_TIMEOUT_MS,
    });
    let dropped = false;
    const drop = (err?: unknown): void => {
      if (dropped) return;
      dropped = true;
      if (this.#listen?.client === client) this.#listen = undefined;
      client.end().catch(noop);
      if (this.#closed) return;
      if (!this.#listenDown) {
        this.#listenDown = true;
        this.#o.logger?.warn({ err: err === undefined ? 'connection ended' : describeError(err) }, 'LISTEN connection to PostgreSQL lost; re-establishing (catch-up reads continue)');
      }
      this.#scheduleReconnect();
    };
    client.on('error', drop);
    client.on('end', () => drop());
    client.on('notification', () => {
      void this.sync().catch(noop);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${EVENTS_CHANNEL}`);
    } catch (err) {
      this.#connecting = false;
      drop(err);
      return;
    }
    this.#connecting = false;
    if (this.#closed || dropped) {
      client.end().catch(noop);
      return;
    }
    this.#listen = { client, drop };
    this.#backoff.reset();
    if (this.#listenDown) {
      this.#listenDown = false;
      this.#o.logger?.info('LISTEN connection to PostgreSQL re-established');
    }
    // Notifications sent while we were not listening are gone; the log is not.
    void this.sync().catch(noop);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#tick?.cancel();
    this.#reconnect?.cancel();
    const listen = this.#listen;
    this.#listen = undefined;
    await listen?.client.end().catch(noop);
    await this.#running?.catch(noop);
    this.#listeners.clear();
    this.#lostListeners.clear();
  }
}
