/**
 * The PostgreSQL event feed with two store handles on one real database (two
 * "replicas" in one process): a write through one is delivered by the other,
 * once and in order; a commit that sent no notification still arrives (the log
 * is the truth); a LISTEN connection killed by the server is detected and
 * re-established, and nothing committed meanwhile is lost. Also the writer
 * lock between handles: ordered writes queue, audit-only writes do not. Skipped, with the
 * reason shown, only when PostgreSQL is not installed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import type { LogEvent } from '../src/server/control-plane.ts';
import { createLogger } from '../src/shared/logger.ts';
import { hasCommittedFeed, type FeedingStore } from '../src/server/store/committed-feed.ts';
import { LISTEN_APPLICATION_NAME } from '../src/server/store/postgres-event-feed.ts';
import { openPostgresStore } from '../src/server/store/postgres-store.ts';
import { appendAndCompact, findPostgresBin, startThrowawayPostgres, type ThrowawayPostgres } from './helpers/store-postgres.ts';

const SKIP = findPostgresBin() ? false : 'PostgreSQL is not installed (no initdb/pg_ctl found); install postgresql to run the event feed tests';
const T0 = Date.UTC(2026, 0, 1);
/** Short, so the "no notification" case is delivered by the periodic catch-up quickly. */
const CATCH_UP_MS = 100;

/** Log lines in memory with a way to wait for one. */
class WaitableLog {
  readonly lines: Array<Record<string, unknown>> = [];
  #waiters: Array<{ match: (l: Record<string, unknown>) => boolean; resolve: () => void }> = [];
  write(text: string): void {
    const line = JSON.parse(text) as Record<string, unknown>;
    this.lines.push(line);
    this.#waiters = this.#waiters.filter((w) => {
      if (!w.match(line)) return true;
      w.resolve();
      return false;
    });
  }
  /** Resolves once `count` lines match. */
  waitFor(msg: RegExp, count = 1, timeoutMs = 20_000): Promise<void> {
    const matches = (): number => this.lines.filter((l) => msg.test(String(l.msg))).length;
    if (matches() >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${count} log lines ${msg} not seen in time`)), timeoutMs);
      this.#waiters.push({
        match: () => matches() >= count,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

/** Revisions a feed delivered, with a way to wait for one. */
function record(store: FeedingStore): { revisions: number[]; reach(revision: number): Promise<void> } {
  const revisions: number[] = [];
  let waiter: { revision: number; resolve: () => void } | undefined;
  store.committedEvents.subscribe((events: readonly LogEvent[]) => {
    for (const e of events) revisions.push(e.revision);
    if (waiter && revisions.some((r) => r >= waiter!.revision)) {
      waiter.resolve();
      waiter = undefined;
    }
  });
  return {
    revisions,
    reach(revision) {
      if (revisions.some((r) => r >= revision)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`revision ${revision} not delivered in time; got ${revisions.join(',')}`)), 20_000);
        waiter = {
          revision,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        };
      });
    },
  };
}

/** One itemChanged event appended the way the domain layer does. */
function append(store: FeedingStore, name: string): Promise<number> {
  return store.write(async (w) => {
    const revision = await w.nextRevision();
    await w.appendEvent({ revision, digest: '', type: 'itemChanged', namespace: 'feed/test', name, kind: 'config', version: 1, env: 'base' }, T0);
    return revision;
  });
}

describe('PostgreSQL event feed', { skip: SKIP }, () => {
  let cluster: ThrowawayPostgres;
  before(async () => {
    cluster = await startThrowawayPostgres();
  });
  after(() => cluster?.stop());

  async function twoReplicas(t: { after: (fn: () => Promise<void>) => void }, log?: WaitableLog) {
    const url = await cluster.createDatabase();
    const logger = log ? createLogger({ component: 'test', level: 'debug', destination: log }) : undefined;
    const open = async () => {
      const store = await openPostgresStore({ url, now: () => T0, poolSize: 3, logger, catchUpIntervalMs: CATCH_UP_MS });
      assert.ok(hasCommittedFeed(store));
      t.after(() => store.close());
      return store;
    };
    return { url, a: await open(), b: await open() };
  }

  test('a write through one handle is delivered by the other, every revision once and in order', async (t) => {
    const { a, b } = await twoReplicas(t);
    const seenA = record(a);
    const seenB = record(b);
    const revisions = await Promise.all([...Array.from({ length: 10 }, (_, i) => append(a, `a${i}`)), ...Array.from({ length: 10 }, (_, i) => append(b, `b${i}`))]);
    const last = Math.max(...revisions);
    await Promise.all([seenA.reach(last), seenB.reach(last)]);
    const expected = Array.from({ length: 20 }, (_, i) => i + 1);
    assert.deepEqual(seenA.revisions, expected);
    assert.deepEqual(seenB.revisions, expected);
  });

  test('a commit that sent no notification is still delivered (the log is the truth)', async (t) => {
    const { url, a } = await twoReplicas(t);
    const seen = record(a);
    // A writer that bypasses the store (think: a notification lost in transit).
    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    t.after(() => raw.end());
    await raw.query('BEGIN');
    const { rows } = await raw.query('UPDATE revision_counter SET revision = revision + 1 WHERE id = 1 RETURNING revision');
    const revision = Number(rows[0].revision);
    await raw.query("INSERT INTO events (revision, type, namespace, name, env, kind, version, created_at) VALUES ($1, 'itemChanged', 'feed/test', 'silent', 'base', 'config', 1, $2)", [
      revision,
      T0,
    ]);
    await raw.query('COMMIT');
    await seen.reach(revision);
    assert.deepEqual(seen.revisions, [revision]);
  });

  test('events compacted before this handle delivered them are reported lost; delivery goes on after them', async (t) => {
    const { url, a } = await twoReplicas(t);
    const seen = record(a);
    const lost: Array<{ deliveredRevision: number; compactedThrough: number }> = [];
    const reported = new Promise<void>((resolve) => {
      a.committedEvents.onEventsLost((info) => {
        lost.push(info);
        resolve();
      });
    });
    const through = await appendAndCompact(url, 3);
    await reported;
    assert.deepEqual(lost, [{ deliveredRevision: 0, compactedThrough: through }]);
    const next = await append(a, 'after-gap');
    await seen.reach(next);
    assert.deepEqual(seen.revisions, [next]);
  });

  test('across handles, ordered writes queue on the counter row while an audit-only write does not', async (t) => {
    const { url, a, b } = await twoReplicas(t);
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let holding!: () => void;
    const isHolding = new Promise<void>((resolve) => {
      holding = resolve;
    });
    const first = a.write(async (w) => {
      const revision = await w.nextRevision();
      holding();
      await held;
      return revision;
    });
    await isHolding;
    await b.write((w) => w.insertAudit({ at: T0, subject: 's', action: 'read', target: 'feed/test/x', outcome: 'ok', detail: '' }));
    let secondDone = false;
    const second = append(b, 'queued').then((revision) => {
      secondDone = true;
      return revision;
    });
    // The audit write above finished while A held the lock; B's ordered write shows up as a backend waiting on it.
    const waitingOnLock = "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for (let i = 0; i < 200 && Number((await cluster.query(url, waitingOnLock))[0]?.n) === 0; i++);
    assert.equal(Number((await cluster.query(url, waitingOnLock))[0]?.n), 1, 'the ordered write waits on the counter row');
    assert.equal(secondDone, false);
    release();
    assert.deepEqual([await first, await second], [1, 2]);
  });

  test('a LISTEN connection killed by the server is re-established; commits meanwhile are delivered once, in order', async (t) => {
    const log = new WaitableLog();
    const { url, a, b } = await twoReplicas(t, log);
    const seen = record(a);
    const first = await append(b, 'before');
    await seen.reach(first);
    const killed = await cluster.query(url, `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = '${LISTEN_APPLICATION_NAME}'`);
    assert.equal(killed.length, 2, 'each handle holds one LISTEN connection');
    await log.waitFor(/LISTEN connection to PostgreSQL lost/);
    const during = await append(b, 'during');
    await log.waitFor(/LISTEN connection to PostgreSQL re-established/, 2);
    const afterwards = await append(b, 'after');
    await seen.reach(afterwards);
    assert.deepEqual(seen.revisions, [first, during, afterwards]);
    const listening = await cluster.query(url, `SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '${LISTEN_APPLICATION_NAME}'`);
    assert.equal(Number(listening[0]?.n), 2, 'both handles listen again');
  });
});
