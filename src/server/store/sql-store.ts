/**
 * The store's queries, written once in the SQL SQLite and PostgreSQL share and
 * run over any `SqlConnection`; engines (sqlite-store.ts, later a pg engine)
 * supply connections, transactions and backup, and the dialect supplies the
 * few spellings that differ.
 */
import type { ItemRef } from '../../shared/paths.ts';
import type { ItemKind } from '../../shared/protocol.ts';
import type { LogEvent } from '../control-plane.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { AppError } from '../../shared/errors.ts';
import { aadVersionOf } from '../../shared/crypto.ts';
import type { Dialect } from './dialect.ts';
import type {
  DekRow,
  ItemRow,
  LogPage,
  LogState,
  SealedColumns,
  RolloutRow,
  StoredAudit,
  StoreWriter,
  VersionMeta,
  VersionRow,
} from './store.ts';

export type SqlParam = string | number | Buffer | null;
export type SqlRow = Record<string, unknown>;

/** One database connection as the queries see it; the engine owns transactions. */
export interface SqlConnection {
  all(sql: string, params?: readonly SqlParam[]): Promise<SqlRow[]>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: readonly SqlParam[]): Promise<number>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(script: string): Promise<void>;
}

/** Integers come back as number (SQLite), bigint or string (pg BIGINT). */
function num(value: unknown): number {
  if (value === null || value === undefined) return 0;
  return Number(value);
}

function text(value: unknown): string {
  return value === null || value === undefined ? '' : String(value);
}

function bytes(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new AppError('internal', 'A binary column holds a non-binary value.');
}

function rolloutRow(row: SqlRow): RolloutRow {
  return {
    id: text(row.id),
    state: text(row.state),
    doc: text(row.doc),
    candidate: text(row.candidate),
    leaseOwner: text(row.lease_owner),
    leaseUntil: num(row.lease_until),
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

function itemRow(row: SqlRow): ItemRow {
  return {
    namespace: text(row.namespace),
    name: text(row.name),
    kind: text(row.kind) as ItemKind,
    lastVersion: num(row.last_version),
    deleted: num(row.deleted) !== 0,
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
    ringGrace: num(row.ring_grace),
    ringFloor: num(row.ring_floor),
  };
}

function versionRow(row: SqlRow): VersionRow {
  const base = {
    namespace: text(row.namespace),
    name: text(row.name),
    version: num(row.version),
    env: text(row.env),
    revision: num(row.revision),
    createdAt: num(row.created_at),
    createdBy: text(row.created_by),
  };
  if (num(row.deleted) !== 0) return { ...base, deleted: true, sealed: null };
  return {
    ...base,
    deleted: false,
    sealed: {
      keyId: text(row.key_id),
      keyVersion: num(row.key_version),
      aadVersion: aadVersionOf(num(row.aad_version)),
      iv: bytes(row.iv),
      ciphertext: bytes(row.ciphertext),
      tag: bytes(row.tag),
    },
  };
}

function dekRow(row: SqlRow): DekRow {
  return {
    namespace: text(row.namespace),
    version: num(row.version),
    wrapped: bytes(row.wrapped),
    kekId: text(row.kek_id),
    createdAt: num(row.created_at),
  };
}

/** A change-set member's stamp (migration 016); 0 = not part of a set. */
function setRevisionOf(row: SqlRow): { setRevision?: number } {
  const setRevision = num(row.set_revision);
  return setRevision > 0 ? { setRevision } : {};
}

function logEvent(row: SqlRow): LogEvent {
  const revision = num(row.revision);
  const namespace = text(row.namespace);
  const digest = text(row.digest);
  switch (text(row.type)) {
    case 'itemChanged':
      return { revision, digest, type: 'itemChanged', namespace, name: text(row.name), kind: text(row.kind), version: num(row.version), env: text(row.env), ...setRevisionOf(row) };
    case 'itemDeleted':
      return { revision, digest, type: 'itemDeleted', namespace, name: text(row.name), env: text(row.env), version: num(row.version), ...setRevisionOf(row) };
    case 'keyRotated':
      return { revision, digest, type: 'keyRotated', namespace, keyVersion: num(row.key_version) };
    default:
      throw new AppError('internal', `The event log holds an unknown event type at revision ${revision}.`);
  }
}

const VERSION_COLUMNS =
  'v.namespace, v.name, v.version, v.env, v.key_id, v.key_version, v.aad_version, v.iv, v.ciphertext, v.tag, v.deleted, v.revision, v.created_at, v.created_by';

/** A version's metadata: everything but the sealed value. */
const META_COLUMNS = 'v.namespace, v.name, v.version, v.env, v.deleted, v.revision, v.created_at, v.created_by, v.key_version';

function versionMeta(row: SqlRow): VersionMeta {
  return {
    namespace: text(row.namespace),
    name: text(row.name),
    version: num(row.version),
    env: text(row.env),
    deleted: num(row.deleted) !== 0,
    revision: num(row.revision),
    createdAt: num(row.created_at),
    createdBy: text(row.created_by),
    keyVersion: row.key_version === null ? null : num(row.key_version),
  };
}

/** `namespace` equals the prefix or lies under it on a segment boundary; `substr` rather than LIKE because `_` is a LIKE wildcard and legal in segments. */
const UNDER_PREFIX = '(? = \'\' OR namespace = ? OR substr(namespace, 1, ?) = ?)';

function prefixParams(prefix: string): SqlParam[] {
  return [prefix, prefix, prefix.length + 1, `${prefix}/`];
}

/**
 * Orders by namespace then name in code-unit (= byte, for these ASCII names)
 * order; done here rather than in SQL because PostgreSQL's ORDER BY follows the
 * database locale's collation and the engines must agree.
 */
function byItem(a: ItemRef, b: ItemRef): number {
  if (a.namespace !== b.namespace) return a.namespace < b.namespace ? -1 : 1;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return 0;
}

function byDek(a: DekRow, b: DekRow): number {
  return byItem({ namespace: a.namespace, name: '' }, { namespace: b.namespace, name: '' }) || a.version - b.version;
}

/** The newest version per (item, env) among rows matching `where`. */
function currentVersionsSql(where: string, columns = VERSION_COLUMNS): string {
  return `SELECT ${columns} FROM versions v
    JOIN (SELECT namespace, name, env, MAX(version) AS version FROM versions WHERE ${where} GROUP BY namespace, name, env) c
      ON v.namespace = c.namespace AND v.name = c.name AND v.env = c.env AND v.version = c.version
    ORDER BY v.version`;
}

/**
 * The queries of one transaction or read snapshot. Created by an engine for
 * the duration of one `read`/`write` callback.
 */
export class SqlStoreTx implements StoreWriter {
  readonly #conn: SqlConnection;
  readonly #dialect: Dialect;
  readonly #sqlCache = new Map<string, string>();

  constructor(conn: SqlConnection, dialect: Dialect) {
    this.#conn = conn;
    this.#dialect = dialect;
  }

  #sql(sql: string): string {
    let out = this.#sqlCache.get(sql);
    if (out === undefined) {
      out = this.#dialect.placeholders(sql);
      this.#sqlCache.set(sql, out);
    }
    return out;
  }

  #all(sql: string, params: readonly SqlParam[] = []): Promise<SqlRow[]> {
    return this.#conn.all(this.#sql(sql), params);
  }

  #run(sql: string, params: readonly SqlParam[] = []): Promise<number> {
    return this.#conn.run(this.#sql(sql), params);
  }

  async #one(sql: string, params: readonly SqlParam[] = []): Promise<SqlRow | undefined> {
    return (await this.#all(sql, params))[0];
  }

  // --- items ---------------------------------------------------------------

  async getItem(ref: ItemRef): Promise<ItemRow | undefined> {
    const row = await this.#one('SELECT * FROM items WHERE namespace = ? AND name = ?', [ref.namespace, ref.name]);
    return row ? itemRow(row) : undefined;
  }

  async listItems(prefix: string, page: { readonly after: ItemRef | undefined; readonly limit: number }): Promise<ItemRow[]> {
    const ns = `namespace COLLATE ${this.#dialect.byteOrder}`;
    const name = `name COLLATE ${this.#dialect.byteOrder}`;
    const where = [`deleted = 0 AND ${UNDER_PREFIX}`];
    const params = prefixParams(prefix);
    // Everything under P lies in [P, P + '0') in byte order ('/' sorts just before '0'): an index range, then the exact test above.
    if (prefix !== '') {
      where.push(`${ns} >= ? AND ${ns} < ?`);
      params.push(prefix, `${prefix}0`);
    }
    if (page.after) {
      where.push(`${ns} >= ? AND (${ns} > ? OR ${name} > ?)`);
      params.push(page.after.namespace, page.after.namespace, page.after.name);
    }
    const rows = await this.#all(`SELECT * FROM items WHERE ${where.join(' AND ')} ORDER BY ${ns}, ${name} LIMIT ?`, [...params, page.limit]);
    return rows.map(itemRow);
  }

  async takeNextVersion(ref: ItemRef, kind: ItemKind, now: Milliseconds): Promise<number> {
    const existing = await this.getItem(ref);
    if (!existing) {
      await this.#run('INSERT INTO items (namespace, name, kind, last_version, deleted, created_at, updated_at) VALUES (?, ?, ?, 1, 0, ?, ?)', [
        ref.namespace,
        ref.name,
        kind,
        now,
        now,
      ]);
      return 1;
    }
    if (!existing.deleted && existing.kind !== kind) {
      throw new AppError('conflict', `${ref.namespace}/${ref.name} is a ${existing.kind}; delete it before writing it as a ${kind}.`);
    }
    const next = existing.lastVersion + 1;
    await this.#run('UPDATE items SET kind = ?, last_version = ?, deleted = 0, updated_at = ? WHERE namespace = ? AND name = ?', [
      kind,
      next,
      now,
      ref.namespace,
      ref.name,
    ]);
    return next;
  }

  async markItemDeleted(ref: ItemRef, now: Milliseconds): Promise<void> {
    // A deleted item's ring setting goes with it: an item written again under the name starts without one.
    await this.#run('UPDATE items SET deleted = 1, updated_at = ?, ring_grace = 0, ring_floor = 0 WHERE namespace = ? AND name = ?', [now, ref.namespace, ref.name]);
  }

  async setRing(ref: ItemRef, grace: Milliseconds, floor: number): Promise<void> {
    await this.#run('UPDATE items SET ring_grace = ?, ring_floor = ? WHERE namespace = ? AND name = ?', [grace, floor, ref.namespace, ref.name]);
  }

  async ringItemsIn(namespace: string): Promise<ItemRow[]> {
    const rows = await this.#all('SELECT * FROM items WHERE namespace = ? AND deleted = 0 AND ring_grace > 0', [namespace]);
    return rows.map(itemRow).sort(byItem);
  }

  // --- versions ------------------------------------------------------------

  async currentVersions(ref: ItemRef): Promise<VersionRow[]> {
    const rows = await this.#all(currentVersionsSql('namespace = ? AND name = ?'), [ref.namespace, ref.name]);
    return rows.map(versionRow);
  }

  async currentLayersOf(refs: readonly ItemRef[]): Promise<VersionMeta[]> {
    if (refs.length === 0) return [];
    // Without the sealed columns: a listing page never sends ciphertext, so it does not read it.
    const keys = refs.map(() => '(?, ?)').join(', ');
    const rows = await this.#all(currentVersionsSql(`(namespace, name) IN (VALUES ${keys})`, META_COLUMNS), refs.flatMap((r) => [r.namespace, r.name]));
    return rows.map(versionMeta).sort((a, b) => byItem(a, b) || a.version - b.version);
  }

  async currentVersionsIn(namespace: string): Promise<VersionRow[]> {
    const rows = await this.#all(currentVersionsSql('namespace = ?'), [namespace]);
    return rows.map(versionRow).sort((a, b) => byItem(a, b) || a.version - b.version);
  }

  async keyVersionsInUse(namespace: string): Promise<number[]> {
    // A loose index scan over versions_key: one seek per distinct key version
    // (a handful, one per rotation) rather than a pass over every current
    // version of the namespace, which at 100k items held the event loop for seconds.
    const inUse: number[] = [];
    let after = -1;
    for (;;) {
      const next = await this.#one('SELECT key_version FROM versions WHERE namespace = ? AND key_version > ? ORDER BY key_version LIMIT 1', [namespace, after]);
      if (!next) return inUse;
      after = num(next.key_version);
      // Tombstones carry no key version, so a row under this key is live; it is in use while no newer version of its layer exists.
      const current = await this.#one(
        `SELECT 1 AS hit FROM versions v WHERE v.namespace = ? AND v.key_version = ?
           AND NOT EXISTS (SELECT 1 FROM versions n WHERE n.namespace = v.namespace AND n.name = v.name AND n.env = v.env AND n.version > v.version)
         LIMIT 1`,
        [namespace, after],
      );
      if (current) inUse.push(after);
    }
  }

  async resealPage(namespace: string, afterName: string, limit: number, history: boolean): Promise<{ rows: VersionRow[]; next: string | undefined }> {
    // Names from items (deleted items keep their row, and history under them can be live), then their versions by a range on the key.
    const names = await this.#all('SELECT name FROM items WHERE namespace = ? AND name > ? ORDER BY name LIMIT ?', [namespace, afterName, limit]);
    const last = names.at(-1);
    if (last === undefined) return { rows: [], next: undefined };
    const through = text(last.name);
    const rows = history
      ? await this.#all(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE namespace = ? AND name > ? AND name <= ? AND deleted = 0`, [namespace, afterName, through])
      : await this.#all(currentVersionsSql('namespace = ? AND name > ? AND name <= ?'), [namespace, afterName, through]);
    return { rows: rows.map(versionRow), next: names.length < limit ? undefined : through };
  }

  async versionsSealedBelowAad(aadVersion: number): Promise<Array<ItemRef & { readonly version: number }>> {
    const rows = await this.#all('SELECT namespace, name, version FROM versions WHERE deleted = 0 AND aad_version < ? ORDER BY namespace, name, version', [aadVersion]);
    return rows.map((row) => ({ namespace: text(row.namespace), name: text(row.name), version: num(row.version) }));
  }

  async getVersion(ref: ItemRef, version: number): Promise<VersionRow | undefined> {
    const row = await this.#one(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE namespace = ? AND name = ? AND version = ?`, [
      ref.namespace,
      ref.name,
      version,
    ]);
    return row ? versionRow(row) : undefined;
  }

  async versionHistory(ref: ItemRef): Promise<VersionMeta[]> {
    const rows = await this.#all(
      `SELECT ${META_COLUMNS} FROM versions v WHERE namespace = ? AND name = ? ORDER BY version`,
      [ref.namespace, ref.name],
    );
    return rows.map(versionMeta);
  }

  async liveVersionsIn(namespace: string): Promise<VersionRow[]> {
    const rows = await this.#all(`SELECT ${VERSION_COLUMNS} FROM versions v WHERE namespace = ? AND deleted = 0`, [namespace]);
    return rows.map(versionRow).sort((a, b) => byItem(a, b) || a.version - b.version);
  }

  async insertVersion(row: VersionRow): Promise<void> {
    const s = row.sealed;
    await this.#run(
      `INSERT INTO versions (namespace, name, version, env, key_id, key_version, aad_version, iv, ciphertext, tag, deleted, revision, created_at, created_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        row.namespace,
        row.name,
        row.version,
        row.env,
        s?.keyId ?? null,
        s?.keyVersion ?? null,
        s?.aadVersion ?? 1,
        s?.iv ?? null,
        s?.ciphertext ?? null,
        s?.tag ?? null,
        row.deleted ? 1 : 0,
        row.revision,
        row.createdAt,
        row.createdBy,
      ],
    );
  }

  async resealVersion(ref: ItemRef, version: number, sealed: SealedColumns): Promise<void> {
    await this.#run('UPDATE versions SET key_id = ?, key_version = ?, aad_version = ?, iv = ?, ciphertext = ?, tag = ? WHERE namespace = ? AND name = ? AND version = ?', [
      sealed.keyId,
      sealed.keyVersion,
      sealed.aadVersion,
      sealed.iv,
      sealed.ciphertext,
      sealed.tag,
      ref.namespace,
      ref.name,
      version,
    ]);
  }

  async deleteVersions(ref: ItemRef, versions: readonly number[]): Promise<void> {
    for (const version of versions) {
      await this.#run('DELETE FROM versions WHERE namespace = ? AND name = ? AND version = ?', [ref.namespace, ref.name, version]);
    }
  }

  async deleteAllVersions(ref: ItemRef): Promise<void> {
    await this.#run('DELETE FROM versions WHERE namespace = ? AND name = ?', [ref.namespace, ref.name]);
  }

  // --- data keys -------------------------------------------------------------

  async getDek(namespace: string, version: number): Promise<DekRow | undefined> {
    const row = await this.#one('SELECT * FROM deks WHERE namespace = ? AND version = ?', [namespace, version]);
    return row ? dekRow(row) : undefined;
  }

  async currentDek(namespace: string): Promise<DekRow | undefined> {
    const row = await this.#one('SELECT * FROM deks WHERE namespace = ? ORDER BY version DESC LIMIT 1', [namespace]);
    return row ? dekRow(row) : undefined;
  }

  async currentDeks(): Promise<DekRow[]> {
    const rows = await this.#all(
      `SELECT d.* FROM deks d JOIN (SELECT namespace, MAX(version) AS version FROM deks GROUP BY namespace) c
         ON d.namespace = c.namespace AND d.version = c.version`,
    );
    return rows.map(dekRow).sort(byDek);
  }

  async allDeks(): Promise<DekRow[]> {
    return (await this.#all('SELECT * FROM deks')).map(dekRow).sort(byDek);
  }

  async dekVersionsInUse(namespace: string): Promise<number[]> {
    const rows = await this.#all('SELECT DISTINCT key_version FROM versions WHERE namespace = ? AND deleted = 0 ORDER BY key_version', [namespace]);
    return rows.map((row) => num(row.key_version));
  }

  async dekVersionsOf(namespace: string): Promise<number[]> {
    const rows = await this.#all('SELECT version FROM deks WHERE namespace = ?', [namespace]);
    return rows.map((row) => num(row.version)).sort((a, b) => a - b);
  }

  async deleteDeksBelow(namespace: string, version: number): Promise<number[]> {
    const doomed = (await this.dekVersionsOf(namespace)).filter((v) => v < version);
    await this.#run('DELETE FROM deks WHERE namespace = ? AND version < ?', [namespace, version]);
    return doomed;
  }

  async insertDek(row: DekRow): Promise<void> {
    await this.#run('INSERT INTO deks (namespace, version, wrapped, kek_id, created_at) VALUES (?, ?, ?, ?, ?)', [
      row.namespace,
      row.version,
      row.wrapped,
      row.kekId,
      row.createdAt,
    ]);
  }

  async rewrapDek(namespace: string, version: number, wrapped: Buffer, kekId: string): Promise<void> {
    await this.#run('UPDATE deks SET wrapped = ?, kek_id = ? WHERE namespace = ? AND version = ?', [wrapped, kekId, namespace, version]);
  }

  // --- event log -------------------------------------------------------------

  /**
   * Revisions come from one counter row updated inside the writing transaction,
   * not from a sequence or autoincrement. Writers hold this row's lock from the
   * start of their transaction to COMMIT (SQLite: BEGIN IMMEDIATE's database
   * write lock; PostgreSQL: the dialect's `FOR UPDATE` on this row), so
   * revisions are handed out in commit order and a rolled-back transaction
   * gives its number back. A sequence would allow gaps and out-of-order commits (revision 8 visible
   * before 7), and a watcher that passed 8 would never see 7.
   */
  async nextRevision(): Promise<number> {
    const row = await this.#one('UPDATE revision_counter SET revision = revision + 1 WHERE id = 1 RETURNING revision');
    if (!row) throw new AppError('internal', 'The revision counter row is missing.');
    return num(row.revision);
  }

  async appendEvent(event: LogEvent, now: Milliseconds): Promise<void> {
    const common = [event.revision, event.type, event.namespace, event.digest] as const;
    switch (event.type) {
      case 'itemChanged':
        await this.#run('INSERT INTO events (revision, type, namespace, digest, name, env, kind, version, set_revision, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', [
          ...common,
          event.name,
          event.env,
          event.kind,
          event.version,
          event.setRevision ?? 0,
          now,
        ]);
        return;
      case 'itemDeleted':
        await this.#run('INSERT INTO events (revision, type, namespace, digest, name, env, version, set_revision, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', [
          ...common,
          event.name,
          event.env,
          event.version,
          event.setRevision ?? 0,
          now,
        ]);
        return;
      case 'keyRotated':
        await this.#run('INSERT INTO events (revision, type, namespace, digest, key_version, created_at) VALUES (?, ?, ?, ?, ?, ?)', [...common, event.keyVersion, now]);
        return;
    }
  }

  async compactEvents(keep: number): Promise<void> {
    const state = await this.logState();
    await this.#compactThrough(state.revision - Math.max(1, keep), state);
  }

  async compactEventsCreatedBefore(cutoff: Milliseconds): Promise<void> {
    const row = await this.#one('SELECT MAX(revision) AS through FROM events WHERE created_at <= ?', [cutoff]);
    await this.#compactThrough(num(row?.through), await this.logState());
  }

  /** Deletes events up to `through`, keeping the digest of the last one for resumes exactly at the boundary. */
  async #compactThrough(through: number, state: LogState): Promise<void> {
    if (through <= state.compactedThrough) return;
    const boundary = await this.#one('SELECT digest FROM events WHERE revision = ?', [through]);
    await this.#run('DELETE FROM events WHERE revision <= ?', [through]);
    await this.#run('UPDATE revision_counter SET compacted_through = ?, compacted_digest = ? WHERE id = 1', [through, text(boundary?.digest)]);
  }

  async markRestored(storeId: string, bump: number, digest: string): Promise<LogState> {
    const state = await this.logState();
    const revision = state.revision + bump;
    await this.#run('DELETE FROM events');
    await this.#run('UPDATE revision_counter SET store_id = ?, revision = ?, compacted_through = ?, compacted_digest = ? WHERE id = 1', [
      storeId,
      revision,
      revision,
      digest,
    ]);
    return { storeId, revision, compactedThrough: revision, compactedDigest: digest };
  }

  async logState(): Promise<LogState> {
    const row = await this.#one('SELECT revision, compacted_through, compacted_digest, store_id FROM revision_counter WHERE id = 1');
    if (!row) throw new AppError('internal', 'The revision counter row is missing.');
    return { storeId: text(row.store_id), revision: num(row.revision), compactedThrough: num(row.compacted_through), compactedDigest: text(row.compacted_digest) };
  }

  async eventsAfter(after: number, limit: number): Promise<LogEvent[]> {
    const rows = await this.#all('SELECT * FROM events WHERE revision > ? ORDER BY revision LIMIT ?', [after, limit]);
    return rows.map(logEvent);
  }

  async logHead(): Promise<LogPage> {
    return this.logPage((await this.logState()).revision, 1);
  }

  async logPage(after: number, limit: number): Promise<LogPage> {
    const state = await this.logState();
    // The event at `after` itself comes with the page, for its digest.
    const rows = await this.#all('SELECT * FROM events WHERE revision >= ? ORDER BY revision LIMIT ?', [after, limit + 1]);
    const first = rows[0];
    const atAfter = first !== undefined && num(first.revision) === after ? first : undefined;
    const events = (atAfter ? rows.slice(1) : rows.slice(0, limit)).map(logEvent);
    let afterDigest: string | undefined;
    if (after === 0) afterDigest = '';
    else if (atAfter) afterDigest = text(atAfter.digest);
    else if (after === state.compactedThrough) afterDigest = state.compactedDigest;
    return { ...state, afterDigest, events };
  }

  // --- audit -----------------------------------------------------------------

  async insertAudit(entry: StoredAudit): Promise<void> {
    await this.#run('INSERT INTO audit_log (at, subject, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)', [
      entry.at,
      entry.subject,
      entry.action,
      entry.target,
      entry.outcome,
      entry.detail,
    ]);
  }

  async compactAudit(before: Milliseconds, keepRows: number): Promise<{ age: number; rows: number }> {
    const age = await this.#run('DELETE FROM audit_log WHERE at < ?', [before]);
    const boundary = await this.#one('SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET ?', [keepRows]);
    const rows = boundary ? await this.#run('DELETE FROM audit_log WHERE id <= ?', [num(boundary.id)]) : 0;
    return { age, rows };
  }

  async recentAudit(limit: number): Promise<StoredAudit[]> {
    const rows = await this.#all('SELECT at, subject, action, target, outcome, detail FROM audit_log ORDER BY id DESC LIMIT ?', [limit]);
    return rows.map((row) => ({
      at: num(row.at),
      subject: text(row.subject),
      action: text(row.action),
      target: text(row.target),
      outcome: text(row.outcome),
      detail: text(row.detail),
    }));
  }

  // --- rollouts --------------------------------------------------------------

  async getRollout(id: string): Promise<RolloutRow | undefined> {
    const row = await this.#one('SELECT * FROM rollouts WHERE id = ?', [id]);
    return row ? rolloutRow(row) : undefined;
  }

  async listRollouts(limit: number): Promise<RolloutRow[]> {
    return (await this.#all('SELECT * FROM rollouts ORDER BY created_at DESC, id DESC LIMIT ?', [limit])).map(rolloutRow);
  }

  async rolloutIdsIn(states: readonly string[]): Promise<string[]> {
    if (states.length === 0) return [];
    const rows = await this.#all(`SELECT id FROM rollouts WHERE state IN (${states.map(() => '?').join(', ')}) ORDER BY created_at, id`, states);
    return rows.map((row) => text(row.id));
  }

  async activeRolloutOf(item: string): Promise<string | undefined> {
    const row = await this.#one('SELECT rollout_id FROM rollout_items WHERE item = ?', [item]);
    return row ? text(row.rollout_id) : undefined;
  }

  async activeRolloutItems(): Promise<Array<{ readonly item: string; readonly rolloutId: string }>> {
    return (await this.#all('SELECT item, rollout_id FROM rollout_items ORDER BY item')).map((row) => ({ item: text(row.item), rolloutId: text(row.rollout_id) }));
  }

  async insertRollout(row: RolloutRow): Promise<void> {
    await this.#run('INSERT INTO rollouts (id, state, doc, candidate, lease_owner, lease_until, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
      row.id,
      row.state,
      row.doc,
      row.candidate,
      row.leaseOwner,
      row.leaseUntil,
      row.createdAt,
      row.updatedAt,
    ]);
  }

  async updateRollout(row: RolloutRow): Promise<void> {
    await this.#run('UPDATE rollouts SET state = ?, doc = ?, candidate = ?, updated_at = ? WHERE id = ?', [row.state, row.doc, row.candidate, row.updatedAt, row.id]);
  }

  async setRolloutItems(id: string, items: readonly string[]): Promise<void> {
    await this.#run('DELETE FROM rollout_items WHERE rollout_id = ?', [id]);
    for (const item of items) {
      const holder = await this.activeRolloutOf(item);
      if (holder !== undefined) throw new AppError('conflict', `${item} is already in active rollout ${holder}; promote or abort it first (one active rollout per item).`);
      await this.#run('INSERT INTO rollout_items (item, rollout_id) VALUES (?, ?)', [item, id]);
    }
  }

  async takeRolloutLease(id: string, owner: string, now: Milliseconds, until: Milliseconds): Promise<boolean> {
    const changed = await this.#run('UPDATE rollouts SET lease_owner = ?, lease_until = ? WHERE id = ? AND (lease_owner = ? OR lease_owner = ? OR lease_until < ?)', [
      owner,
      until,
      id,
      owner,
      '',
      now,
    ]);
    return changed > 0;
  }

  releaseRolloutLeases(owner: string): Promise<number> {
    return this.#run('UPDATE rollouts SET lease_owner = ?, lease_until = ? WHERE lease_owner = ?', ['', 0, owner]);
  }
}
