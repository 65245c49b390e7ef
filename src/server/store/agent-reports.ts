/**
 * Where agents' reports are kept (fleet convergence). An optional capability
 * of a `Store`, like `committedEvents`: PostgreSQL keeps them in the
 * `agent_reports` table so every replica answers alike; the embedded engine
 * (one server process) keeps them in memory, so a report never waits on the
 * SQLite write lock that revisions are taken under. Either way a report is
 * one small upsert outside any revision transaction.
 */
import type { AgentHealth, AgentReport, AppHealth, RolloutVersion } from '../../shared/fleet-proto.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { SqlConnection, SqlParam, SqlRow } from './sql-store.ts';
import type { Store } from './store.ts';

/** A stored report: what the agent said (its id checked against its subject), and when. */
export type AgentReportRow = Omit<AgentReport, 'agentId'> & {
  readonly id: string;
  readonly subject: string;
  readonly lastSeen: Milliseconds;
};

export interface AgentReportTable {
  upsert(row: AgentReportRow): Promise<void>;
  get(id: string): Promise<AgentReportRow | undefined>;
  /** Reports last seen at or after `since`, by id. */
  seenSince(since: Milliseconds): Promise<AgentReportRow[]>;
  /** Live reports (seen at or after `since`) of one subject. */
  countForSubject(subject: string, since: Milliseconds): Promise<number>;
  /** Deletes reports last seen before `cutoff`; returns how many. */
  dropSeenBefore(cutoff: Milliseconds): Promise<number>;
}

export interface ReportingStore extends Store {
  readonly agentReports: AgentReportTable;
}

export function hasAgentReports(store: Store): store is ReportingStore {
  return typeof (store as Partial<ReportingStore>).agentReports?.upsert === 'function';
}

const byId = (a: AgentReportRow, b: AgentReportRow): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export function memoryAgentReports(): AgentReportTable {
  const rows = new Map<string, AgentReportRow>();
  return {
    async upsert(row) {
      rows.set(row.id, row);
    },
    async get(id) {
      return rows.get(id);
    },
    async seenSince(since) {
      return [...rows.values()].filter((r) => r.lastSeen >= since).sort(byId);
    },
    async countForSubject(subject, since) {
      let n = 0;
      for (const r of rows.values()) if (r.subject === subject && r.lastSeen >= since) n += 1;
      return n;
    },
    async dropSeenBefore(cutoff) {
      let n = 0;
      for (const [id, r] of rows) {
        if (r.lastSeen < cutoff) {
          rows.delete(id);
          n += 1;
        }
      }
      return n;
    },
  };
}

const COLUMNS = 'id, subject, prefixes, applied_revision, store_id, connected, health, rollouts, last_seen, app_health, health_reason';

/**
 * The app_health column holds the signal and the revision it was observed at
 * as `state@revision`, and for an agent rendering files ` files@revision`
 * after it (018 made the column; both came after it was merged, and an
 * edited migration stops every store that ran it).
 */
function appHealthToColumn(row: AgentReportRow): string {
  const state = row.appHealth ?? 'unknown';
  const health = row.appHealthRevision ? `${state}@${row.appHealthRevision}` : state;
  return row.rendersFiles ? `${health} files@${row.filesRevision ?? 0}` : health;
}

function appHealthFromColumn(column: string): { appHealth: AppHealth; appHealthRevision: number; rendersFiles?: true; filesRevision?: number } {
  const [text = '', files] = column.split(' ');
  const at = text.indexOf('@');
  const health = at < 0 ? { appHealth: text as AppHealth, appHealthRevision: 0 } : { appHealth: text.slice(0, at) as AppHealth, appHealthRevision: Number(text.slice(at + 1)) || 0 };
  return files?.startsWith('files@') ? { ...health, rendersFiles: true, filesRevision: Number(files.slice('files@'.length)) || 0 } : health;
}

function rowOf(r: SqlRow): AgentReportRow {
  return {
    id: String(r.id),
    subject: String(r.subject),
    prefixes: JSON.parse(String(r.prefixes)) as string[],
    appliedRevision: Number(r.applied_revision),
    storeId: String(r.store_id),
    connected: Number(r.connected) === 1,
    health: String(r.health) as AgentHealth,
    rollouts: JSON.parse(String(r.rollouts)) as RolloutVersion[],
    lastSeen: Number(r.last_seen),
    ...appHealthFromColumn(String(r.app_health ?? 'unknown')),
    healthReason: String(r.health_reason ?? ''),
  };
}

/** The table on a SQL engine; `withConnection` runs one autocommit statement batch (no revision lock). */
export function sqlAgentReports(withConnection: <T>(fn: (conn: SqlConnection) => Promise<T>) => Promise<T>, placeholders: (sql: string) => string): AgentReportTable {
  const all = (sql: string, params: SqlParam[]): Promise<SqlRow[]> => withConnection((c) => c.all(placeholders(sql), params));
  const run = (sql: string, params: SqlParam[]): Promise<number> => withConnection((c) => c.run(placeholders(sql), params));
  return {
    async upsert(row) {
      await run(
        `INSERT INTO agent_reports (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET subject = excluded.subject, prefixes = excluded.prefixes, applied_revision = excluded.applied_revision,
           store_id = excluded.store_id, connected = excluded.connected, health = excluded.health, rollouts = excluded.rollouts, last_seen = excluded.last_seen,
           app_health = excluded.app_health, health_reason = excluded.health_reason`,
        [row.id, row.subject, JSON.stringify(row.prefixes), row.appliedRevision, row.storeId, row.connected ? 1 : 0, row.health, JSON.stringify(row.rollouts), row.lastSeen, appHealthToColumn(row), row.healthReason ?? ''],
      );
    },
    async get(id) {
      const [r] = await all(`SELECT ${COLUMNS} FROM agent_reports WHERE id = ?`, [id]);
      return r ? rowOf(r) : undefined;
    },
    async seenSince(since) {
      return (await all(`SELECT ${COLUMNS} FROM agent_reports WHERE last_seen >= ?`, [since])).map(rowOf).sort(byId);
    },
    async countForSubject(subject, since) {
      const [r] = await all('SELECT COUNT(*) AS n FROM agent_reports WHERE subject = ? AND last_seen >= ?', [subject, since]);
      return Number(r?.n ?? 0);
    },
    async dropSeenBefore(cutoff) {
      return run('DELETE FROM agent_reports WHERE last_seen < ?', [cutoff]);
    },
  };
}
