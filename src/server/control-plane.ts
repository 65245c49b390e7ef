/**
 * The control plane's domain interface: what the transports (REST, gRPC Watch,
 * CLI backup) need from storage + encryption, with no HTTP or gRPC in it.
 * `openControlPlane` (control-plane-impl) builds it on a `Store` engine
 * (SQLite now, PostgreSQL later) and a `KekProvider`.
 *
 * Values cross this interface as plaintext `Buffer`s (config: UTF-8 JSON bytes;
 * secret: raw bytes) so callers can zero-fill them after writing a response.
 */
import type { ItemRef } from '../shared/paths.ts';
import type {
  ChangeSetResponse,
  KeyAgeView,
  EnvelopeResponse,
  HistoryResponse,
  ItemKind,
  ListResponse,
  PutItemResponse,
  RotateResponse,
} from '../shared/protocol.ts';
import type { WatchEvent } from '../shared/watch-proto.ts';
import type { AgentReportTable } from './store/agent-reports.ts';
import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { LogPage } from './store/store.ts';
import type { ItemLayers } from './inline-layers.ts';
import type { RolloutRecord } from './rollouts/rollout-record.ts';
import type { RingEnvelopeResponse, RingWrite } from '../shared/ring-proto.ts';
import type { RingJsonInput } from '../shared/ring-json.ts';

/**
 * An event as stored in the log (heartbeats and resyncs are stream-only), with
 * its digest (hex; '' for events written before digests existed).
 */
export type LogEvent = Extract<WatchEvent, { type: 'itemChanged' | 'itemDeleted' | 'keyRotated' }> & { readonly digest: string };

/** One member of an atomic change set, validated at the edge (env resolved). */
export type ChangeOp =
  | { readonly op: 'put'; readonly ref: ItemRef; readonly env: string; readonly kind: ItemKind; readonly value: Buffer; readonly ring?: RingWrite | undefined }
  | { readonly op: 'delete'; readonly ref: ItemRef; readonly env: string | undefined };

/** Wraps and unwraps DEKs. File/env now; Vault Transit or a cloud KMS fit the same shape. */
export interface KekProvider {
  /** Identifies the KEK a wrapped DEK needs (e.g. a fingerprint); stored beside each wrapped DEK. */
  readonly id: string;
  /**
   * `context` (optional) is bound to the wrapped blob (AAD / KMS encryption
   * context): the control plane passes the DEK's namespace and version, so a
   * wrapped DEK copied to another row fails to unwrap. Unwrap needs the same context.
   */
  wrap(dek: Buffer, context?: string): Promise<Buffer>;
  unwrap(wrapped: Buffer, context?: string): Promise<Buffer>;
}

export interface ItemValue extends ItemRef {
  readonly kind: ItemKind;
  readonly env: string;
  /** The newest contributing layer's version. */
  readonly version: number;
  /** The revision of the newest contributing write. */
  readonly revision: number;
  /** Quoted; covers every contributing layer's version. */
  readonly etag: string;
  /** Plaintext: merged JSON bytes for config, raw bytes for a secret. Zero-fill after use. */
  readonly value: Buffer;
}

/**
 * An item's key ring (issue 20): the current value and the previous versions
 * still within their grace, newest first; the etag changes when the current
 * value or the ring's membership does (`ringEtag`). Plaintexts: zero-fill after use.
 */
export type ItemRing = RingJsonInput;

export interface RotateOptions {
  /** Re-seal every row, history included, under the new key and destroy the older wrapped keys. */
  readonly retirePrevious?: boolean;
}

export interface DekSet {
  readonly namespace: string;
  readonly keyId: string;
  readonly currentVersion: number;
  /** Plaintext DEKs: the current version and those current values and ring members use. Zero-fill after wrapping. */
  readonly keys: ReadonlyArray<{ readonly version: number; readonly dek: Buffer }>;
}

export type AuditAction = 'read' | 'list' | 'write' | 'delete' | 'rollback' | 'rotate' | 'envelope' | 'deks' | 'watch' | 'denied' | 'admin' | 'rollout';

export interface AuditEntry {
  readonly subject: string;
  readonly action: AuditAction;
  /** `namespace/name`, a namespace or a prefix; never a value. */
  readonly target: string;
  readonly outcome: 'ok' | 'denied' | 'error';
  readonly detail?: string;
}

/** A server holds the store and creates it when missing; `backup` shares it; `rotate --kek` holds an existing one. */
export interface StoreAccess {
  readonly exclusive: boolean;
  readonly create: boolean;
}

/** Which page of a listing: at most `limit` items after the key `after` (undefined: from the start). */
export interface ListRange {
  readonly limit: number;
  readonly after: ItemRef | undefined;
}

export interface ListedPage {
  readonly items: ListResponse['items'];
  /** The last key this page scanned, when more may follow; the next page starts after it. */
  readonly next?: ItemRef;
}

export interface ControlPlaneOptions {
  /** Embedded store directory (SQLite). Ignored when `databaseUrl` is set. */
  readonly dataDir: string;
  readonly databaseUrl?: string | undefined;
  /** PostgreSQL connections per process. @default 10 */
  readonly databasePoolSize?: number | undefined;
  readonly kek: KekProvider;
  /** Inheritance chain, least to most specific. @default ['base','dev','staging','prod'] */
  readonly environments: readonly string[];
  /** Versions kept per item; the current ones are never pruned. @default 20 */
  readonly maxVersionsPerItem: number;
  /** DEK age after which the policy rotates it. @default 90d */
  readonly keyMaxAge: Milliseconds;
  /** Events retained in the log (by count); older resumes get ResyncRequired. @default 100000 */
  readonly retainEvents: number;
  /** Events older than this are compacted as well; undefined keeps by count only. */
  readonly retainAge?: Milliseconds | undefined;
  readonly clock: Clock;
  readonly logger: Logger;
  /** How the store is opened (`exclusive`, `create`: src/server/store/sqlite-store.ts; on PostgreSQL an exclusive offline command's store refuses live replicas, postgres-exclusive.ts). */
  readonly storeAccess?: StoreAccess | undefined;
}

/** A staged rollout's start, validated at the edge (src/server/rollouts). */
export interface RolloutStart {
  readonly id: string;
  readonly steps: readonly number[];
  readonly bakeSeconds: number;
  readonly maxUnhealthy: number;
  readonly changes: readonly ChangeOp[];
  /** The first step's canaries, chosen before the transaction. */
  readonly canary: readonly string[];
}

/** A rollout transition: the new record, and what else commits with it. */
export interface RolloutChange {
  readonly record: RolloutRecord;
  /** Who serves the candidate changed: announce the items again (one event each, as a set). */
  readonly touch?: boolean;
  /** Write the candidate as a change set; the rollout becomes completed. */
  readonly complete?: boolean;
}

export interface ControlPlane {
  readonly environments: readonly string[];
  /** Agents' last reports (fleet view): the shared table on PostgreSQL, memory on the embedded store. */
  readonly agentReports: AgentReportTable;

  /** `ring` sets the item's key-ring grace and/or revokes its previous versions. */
  putItem(ref: ItemRef, env: string, kind: ItemKind, value: Buffer, actor: string, ring?: RingWrite): Promise<PutItemResponse>;
  /** Throws not_found, decryption_failed. */
  getItem(ref: ItemRef, env: string): Promise<ItemValue>;
  /** The item's key ring as served for `env` (an item without a ring: current only). Throws like getItem. */
  getRing(ref: ItemRef, env: string): Promise<ItemRing>;
  /** The same as ciphertext layers for an agent. */
  getRingEnvelope(ref: ItemRef, env: string): Promise<RingEnvelopeResponse>;
  /** `env` deletes one layer; undefined deletes the whole item. */
  deleteItem(ref: ItemRef, env: string | undefined, actor: string): Promise<{ revision: number }>;
  /** One page of the live items under `prefix` (`''`: all), in byte order of (namespace, name). */
  list(prefix: string, range: ListRange): Promise<ListedPage>;
  history(ref: ItemRef): Promise<HistoryResponse>;
  /**
   * Commits every change or none, in one transaction: the members take
   * consecutive revisions and each event carries the set's last revision as
   * `setRevision`. Throws like putItem / deleteItem for the first bad member.
   */
  writeChangeSet(changes: readonly ChangeOp[], actor: string): Promise<ChangeSetResponse>;
  /** Writes a new version equal to `version` (same env layer). Throws not_found. */
  rollback(ref: ItemRef, version: number, actor: string): Promise<PutItemResponse>;

  /** New DEK version; re-encrypts the namespace's current versions in one transaction; appends KeyRotated. */
  rotateNamespace(namespace: string, actor: string, options?: RotateOptions): Promise<RotateResponse>;
  /** Every namespace that has a data key (offline re-seal of the whole store). */
  namespacesWithKeys(): Promise<string[]>;
  /** Rotates every namespace whose current DEK is older than keyMaxAge. */
  rotateDueKeys(actor: string): Promise<RotateResponse[]>;
  /** Re-wraps every DEK under `next` without touching values. */
  rotateKek(next: KekProvider): Promise<{ rewrapped: number }>;

  getEnvelope(ref: ItemRef, env: string): Promise<EnvelopeResponse>;
  getDeks(namespace: string): Promise<DekSet>;
  /** The current data key of every namespace: version and age, never the key. */
  keyAges(): Promise<KeyAgeView[]>;

  currentRevision(): Promise<number>;
  /** The oldest revision a resume may name (since_revision >= this - 1 replays fully). */
  oldestRetainedRevision(): Promise<number>;
  /** Events with revision > `after`, in order, at most `limit`. */
  eventsAfter(after: number, limit: number): Promise<LogEvent[]>;
  /**
   * One page of the log after `after` with the log's state (store id,
   * revision, compaction boundary) and the digest at `after`, all from one
   * snapshot, so a reader can tell whether the next revision it needs was
   * compacted (the same code on SQLite and PostgreSQL).
   */
  logPage(after: number, limit: number): Promise<LogPage>;
  /** The log's state and the digest of the newest event (`afterDigest`), from one snapshot. */
  logHead(): Promise<LogPage>;
  /**
   * The current live sealed layers of each item (keyed by `itemKey`), in one
   * snapshot, for change events to carry inline (undefined layers: over
   * INLINE_LAYERS_MAX_BYTES).
   */
  sealedLayers(refs: readonly ItemRef[]): Promise<Map<string, ItemLayers>>;
  /** Called after each commit with the new events in revision order. Returns unsubscribe. */
  onCommitted(listener: (events: readonly LogEvent[]) => void): () => void;
  /**
   * Called when `onCommitted` had to skip events that retention compacted
   * before this process delivered them (a PostgreSQL replica cut off for longer
   * than the retention window). Open watch streams must end so their clients
   * resume, and get ResyncRequired. Returns unsubscribe.
   */
  onEventsLost?(listener: (lost: { readonly deliveredRevision: number; readonly compactedThrough: number }) => void): () => void;

  /**
   * Stores a new rollout (state rolling, step 0) with its candidate sealed and
   * its items held (a direct write to them is a conflict until it ends; an
   * item in another active rollout is a conflict), and announces the items
   * when there are canaries. Throws like writeChangeSet for a bad member.
   */
  startRollout(start: RolloutStart, actor: string): Promise<RolloutRecord>;
  /**
   * Reads the rollout in a write transaction and stores what `change`
   * returns (undefined: nothing), with its touch events or completion change
   * set. Ending states release the items. Throws not_found.
   */
  changeRollout(id: string, change: (record: RolloutRecord) => RolloutChange | undefined, actor: string): Promise<RolloutRecord>;
  getRollout(id: string): Promise<RolloutRecord | undefined>;
  /** Newest first. */
  listRollouts(limit: number): Promise<RolloutRecord[]>;
  /** Rolling or paused rollouts, oldest first. */
  activeRolloutIds(): Promise<string[]>;
  /** The active rollout holding the item, if any. */
  activeRolloutOf(ref: ItemRef): Promise<RolloutRecord | undefined>;
  /** Takes or renews the rollout's drive lease for `owner` (one replica drives a rollout at a time). */
  takeRolloutLease(id: string, owner: string, ttl: Milliseconds): Promise<boolean>;
  /** Frees `owner`'s drive leases, so another replica takes its rollouts over at once; returns how many. */
  releaseRolloutLeases(owner: string): Promise<number>;
  /** The item as the rollout's candidate makes it (canaries, `?rollout=`); throws not_found, conflict (not active). */
  candidateEnvelope(ref: ItemRef, env: string, rolloutId: string): Promise<EnvelopeResponse>;
  candidateItem(ref: ItemRef, env: string, rolloutId: string): Promise<ItemValue>;

  audit(entry: AuditEntry): Promise<void>;
  /** False while the last audit write failed (readiness: secret reads are refused then). */
  readonly auditWritable: boolean;
  /** Retention: deletes audit rows older than `maxAge` and beyond the newest `maxRows`. */
  compactAudit(maxAge: Milliseconds, maxRows: number): Promise<{ age: number; rows: number }>;
  /** Online backup to a file (SQLite's backup API; pg_dump for PostgreSQL). */
  backup(toFile: string): Promise<void>;
  close(): Promise<void>;
}
