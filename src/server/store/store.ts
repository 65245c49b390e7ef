/**
 * The storage interface the control plane's domain layer uses, with the row
 * types it reads and writes. Async throughout so an engine over a network
 * database (PostgreSQL via `pg`) implements it as naturally as the embedded
 * SQLite engine. Rows hold ciphertext and wrapped keys only: nothing readable
 * ever crosses this interface towards disk.
 */
import type { AadVersion } from '../../shared/crypto.ts';
import type { ItemRef } from '../../shared/paths.ts';
import type { ItemKind } from '../../shared/protocol.ts';
import type { LogEvent } from '../control-plane.ts';
import type { Milliseconds } from '../../shared/units.ts';

export interface ItemRow extends ItemRef {
  readonly kind: ItemKind;
  /** The highest version number ever given to this item (survives deletion). */
  readonly lastVersion: number;
  /** True after a whole-item delete; the row stays so versions keep increasing. */
  readonly deleted: boolean;
  readonly createdAt: Milliseconds;
  readonly updatedAt: Milliseconds;
  /** Key ring (issue 20): how long a version that stops being current stays readable; 0 = no ring. */
  readonly ringGrace: Milliseconds;
  /** Versions below this are out of the ring at once (`revokePrevious`); 0 = none revoked. */
  readonly ringFloor: number;
}

/** The sealed part of a version; null fields only on tombstones. */
export interface SealedColumns {
  readonly keyId: string;
  readonly keyVersion: number;
  /** The AAD layout it was sealed with (`valueAad`). */
  readonly aadVersion: AadVersion;
  readonly iv: Buffer;
  readonly ciphertext: Buffer;
  readonly tag: Buffer;
}

interface VersionBase extends ItemRef {
  readonly version: number;
  readonly env: string;
  readonly revision: number;
  readonly createdAt: Milliseconds;
  readonly createdBy: string;
}

/** One immutable version: a sealed value, or a tombstone ending an env layer. */
export type VersionRow =
  | (VersionBase & { readonly deleted: false; readonly sealed: SealedColumns })
  | (VersionBase & { readonly deleted: true; readonly sealed: null });

/** A version without its ciphertext (history, pruning). */
export type VersionMeta = VersionBase & { readonly deleted: boolean; readonly keyVersion: number | null };

export interface DekRow {
  readonly namespace: string;
  readonly version: number;
  /** The DEK wrapped by the KEK `kekId`; never the plaintext key. */
  readonly wrapped: Buffer;
  readonly kekId: string;
  readonly createdAt: Milliseconds;
}

export interface StoredAudit {
  readonly at: Milliseconds;
  readonly subject: string;
  readonly action: string;
  readonly target: string;
  readonly outcome: string;
  readonly detail: string;
}

/**
 * One staged rollout as stored: `state` as a column for queries, the rest of
 * the record as JSON the rollout module owns (src/server/rollouts), and the
 * candidate values sealed (JSON of base64 ciphertext).
 */
export interface RolloutRow {
  readonly id: string;
  readonly state: string;
  readonly doc: string;
  readonly candidate: string;
  readonly leaseOwner: string;
  readonly leaseUntil: Milliseconds;
  readonly createdAt: Milliseconds;
  readonly updatedAt: Milliseconds;
}

export interface LogState {
  /** The store's identity: random, new when the store is created, restored or reset. */
  readonly storeId: string;
  /** The newest revision handed out (0 before the first write). */
  readonly revision: number;
  /** Every revision up to and including this one has been compacted away. */
  readonly compactedThrough: number;
  /** The digest of the event at `compactedThrough` ('' for 0, or an event written before digests existed). */
  readonly compactedDigest: string;
}

/** One page of the log and the log's state, read from one snapshot. */
export interface LogPage extends LogState {
  /**
   * The digest of the event at the `after` the page was read for: '' for 0 and
   * for an event written before digests existed; undefined when no event
   * stands there (compacted, or beyond `revision`).
   */
  readonly afterDigest: string | undefined;
  /** Events with revision > `after`, ascending, at most the limit. */
  readonly events: LogEvent[];
}

/** Queries allowed in a read snapshot. */
export interface StoreReader {
  getItem(ref: ItemRef): Promise<ItemRow | undefined>;
  /**
   * Live (not deleted) items whose namespace is `prefix` or lies under it
   * (`''`: all), in byte order of (namespace, name): at most `limit` after the
   * key `after` (undefined: from the start), by one index range.
   */
  listItems(prefix: string, page: { readonly after: ItemRef | undefined; readonly limit: number }): Promise<ItemRow[]>;
  /** The newest version of each env layer of an item (a tombstone when that layer was deleted). */
  currentVersions(ref: ItemRef): Promise<VersionRow[]>;
  /** The same for each of `refs`, without the sealed values: what a listing page needs. */
  currentLayersOf(refs: readonly ItemRef[]): Promise<VersionMeta[]>;
  /** The current versions of exactly one namespace. */
  currentVersionsIn(namespace: string): Promise<VersionRow[]>;
  /** The key versions that seal at least one current live version of exactly one namespace, ascending (by index seeks, not a pass over the namespace). */
  keyVersionsInUse(namespace: string): Promise<number[]>;
  /**
   * One page of a namespace to re-seal under a new key: the current versions
   * (with `history`, every live version) of the next `limit` items by name
   * after `afterName` (`''` to begin); `next` continues after it, undefined at the end.
   */
  resealPage(namespace: string, afterName: string, limit: number, history: boolean): Promise<{ rows: VersionRow[]; next: string | undefined }>;
  getVersion(ref: ItemRef, version: number): Promise<VersionRow | undefined>;
  /** Live versions sealed with an AAD layout older than `aadVersion` (the start-up re-seal), in key order. */
  versionsSealedBelowAad(aadVersion: number): Promise<Array<ItemRef & { readonly version: number }>>;
  /** Every stored version of an item, oldest first, without ciphertext. */
  versionHistory(ref: ItemRef): Promise<VersionMeta[]>;
  /** Every live (not tombstone) version of every item in exactly one namespace, history included (re-seal under a new key). */
  liveVersionsIn(namespace: string): Promise<VersionRow[]>;
  /** Live items of exactly one namespace that keep a key ring (ring grace > 0). */
  ringItemsIn(namespace: string): Promise<ItemRow[]>;

  getDek(namespace: string, version: number): Promise<DekRow | undefined>;
  currentDek(namespace: string): Promise<DekRow | undefined>;
  /** The current DEK of every namespace. */
  currentDeks(): Promise<DekRow[]>;
  allDeks(): Promise<DekRow[]>;
  /** Key versions of a namespace that some stored version is sealed with. */
  dekVersionsInUse(namespace: string): Promise<number[]>;
  /** Every stored DEK version of one namespace, ascending. */
  dekVersionsOf(namespace: string): Promise<number[]>;

  logState(): Promise<LogState>;
  /** Events with revision > `after`, ascending, at most `limit`. */
  eventsAfter(after: number, limit: number): Promise<LogEvent[]>;
  /** The log state, the digest at `after` and the events after it, in this snapshot. */
  logPage(after: number, limit: number): Promise<LogPage>;
  /** The same at the newest revision: its digest (`afterDigest`) and no events. */
  logHead(): Promise<LogPage>;
  /** Newest first, at most `limit` (for tests and admin views). */
  recentAudit(limit: number): Promise<StoredAudit[]>;

  getRollout(id: string): Promise<RolloutRow | undefined>;
  /** Newest first, at most `limit`. */
  listRollouts(limit: number): Promise<RolloutRow[]>;
  /** Ids of the rollouts in these states, oldest first. */
  rolloutIdsIn(states: readonly string[]): Promise<string[]>;
  /** The active rollout holding `item` (namespace/name), if any. */
  activeRolloutOf(item: string): Promise<string | undefined>;
  /** Every item held by an active rollout (a short list: rollouts are few). */
  activeRolloutItems(): Promise<Array<{ readonly item: string; readonly rolloutId: string }>>;
}

/** Queries and changes allowed inside a write transaction. */
export interface StoreWriter extends StoreReader {
  /** Creates or revives an item (kind may change only while deleted) and takes its next version number. */
  takeNextVersion(ref: ItemRef, kind: ItemKind, now: Milliseconds): Promise<number>;
  /** Marks a whole item deleted; its key-ring setting is reset. */
  markItemDeleted(ref: ItemRef, now: Milliseconds): Promise<void>;
  /** Sets the item's key-ring grace (ms, 0 = off) and floor (versions below it leave the ring). */
  setRing(ref: ItemRef, grace: Milliseconds, floor: number): Promise<void>;
  insertVersion(row: VersionRow): Promise<void>;
  /** Re-seals a version in place (key rotation); the value is unchanged. */
  resealVersion(ref: ItemRef, version: number, sealed: SealedColumns): Promise<void>;
  deleteVersions(ref: ItemRef, versions: readonly number[]): Promise<void>;
  deleteAllVersions(ref: ItemRef): Promise<void>;

  insertDek(row: DekRow): Promise<void>;
  rewrapDek(namespace: string, version: number, wrapped: Buffer, kekId: string): Promise<void>;
  /** Destroys the wrapped DEK versions of a namespace below `version`; returns the versions deleted. */
  deleteDeksBelow(namespace: string, version: number): Promise<number[]>;

  /** Takes the next global revision from the counter row, inside this transaction. */
  nextRevision(): Promise<number>;
  appendEvent(event: LogEvent, now: Milliseconds): Promise<void>;
  /** Deletes events so that at most `keep` newest remain; records how far it compacted. */
  compactEvents(keep: number): Promise<void>;
  /** Deletes events created at or before `cutoff` (age retention); records how far it compacted. */
  compactEventsCreatedBefore(cutoff: Milliseconds): Promise<void>;

  /**
   * Marks a restored store (etcd's `--bump-revision --mark-compacted`): a new
   * identity, the revision counter moved `bump` ahead, and the whole log
   * compacted through it (its boundary digest `digest`), so every position
   * taken from the store before the restore resyncs.
   */
  markRestored(storeId: string, bump: number, digest: string): Promise<LogState>;

  insertAudit(entry: StoredAudit): Promise<void>;

  insertRollout(row: RolloutRow): Promise<void>;
  /** Writes state, doc, candidate and updatedAt (not the lease). */
  updateRollout(row: RolloutRow): Promise<void>;
  /** Replaces the rollout's rows in rollout_items (none: it is no longer active); a conflict on an item throws. */
  setRolloutItems(id: string, items: readonly string[]): Promise<void>;
  /** Takes or renews the lease when free, lapsed or already `owner`'s; false when another holds it. */
  takeRolloutLease(id: string, owner: string, now: Milliseconds, until: Milliseconds): Promise<boolean>;
  /** Frees every lease `owner` holds (a replica stopping); returns how many. */
  releaseRolloutLeases(owner: string): Promise<number>;
  /** Deletes audit rows older than `before`, then all but the newest `keepRows`; returns how many went for each reason. */
  compactAudit(before: Milliseconds, keepRows: number): Promise<{ age: number; rows: number }>;
}

export interface Store {
  /** `sqlite` or `postgres`; for logs and conformance test names. */
  readonly engine: string;
  /** Runs `fn` on one consistent snapshot. */
  read<T>(fn: (reader: StoreReader) => Promise<T>): Promise<T>;
  /**
   * Runs `fn` in a write transaction; write transactions are serialised (one at a
   * time in commit order). `afterCommit` runs after COMMIT and before the next
   * write transaction may start, so callbacks see commits in revision order.
   * Throwing from `fn` rolls back.
   */
  write<T>(fn: (writer: StoreWriter) => Promise<T>, afterCommit?: (result: T) => void): Promise<T>;
  /** An online, consistent copy of the database into `toFile`. */
  backup(toFile: string): Promise<void>;
  /**
   * Drops copies of overwritten rows the engine keeps outside the live tables
   * (SQLite: checkpoints and truncates the WAL), e.g. DEKs wrapped by a retired
   * KEK. Returns false when it could not finish (a long reader); safe to retry.
   */
  scrub(): Promise<boolean>;
  close(): Promise<void>;
}
