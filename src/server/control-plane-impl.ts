/**
 * The control plane's domain layer: versioned items with environment layers,
 * envelope encryption under per-namespace DEKs, key and KEK rotation, pruning,
 * the event log and its retention, audit, and backup, on a `Store` engine.
 * Every change and its events commit in one transaction; listeners hear about
 * commits afterwards, in revision order.
 */
import { CURRENT_AAD_VERSION, open as openSealed, seal, sealedFromWire, sealedToWire, valueAad, zeroize, type ValueIdentity } from '../shared/crypto.ts';
import { AppError, describeError } from '../shared/errors.ts';
import { itemKey, parseItemPath, SEGMENT_RE, validateName, validateNamespace, validatePrefix, type ItemRef } from '../shared/paths.ts';
import type { ChangeSetResponse, EnvelopeResponse, HistoryResponse, ItemKind, KeyAgeView, ListResponse, PutItemResponse, RotateResponse } from '../shared/protocol.ts';
import { SettingError, ENV_PREFIX } from '../shared/settings.ts';
import { CommitListeners } from './commit-listeners.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { AuditEntry, ChangeOp, ControlPlane, ControlPlaneOptions, DekSet, ItemRing, ItemValue, KekProvider, ListedPage, ListRange, LogEvent, RolloutChange, RolloutStart, RotateOptions } from './control-plane.ts';
import { ringEtag, type RingEnvelopeResponse, type RingWrite } from '../shared/ring-proto.ts';
import { ringMembers, type RingMember } from './item-rings.ts';
import { assertJson, chainFor, mergeConfigBuffers, pruneCandidates, resolveLayers, sealedColumns, type LiveVersion, type ResolvedLayers } from './items.ts';
import { ACTIVE_ROLLOUT_STATES, isActive, rolloutAad, rolloutFromRow, rolloutToRow, type CandidateChange, type RolloutRecord } from './rollouts/rollout-record.ts';
import { KEK_ENV_VAR, KEK_FILE_FLAG } from './kek.ts';
import { dekContext, KeyRing, type TxKeys } from './keys.ts';
import { hasCommittedFeed, type EventsLost } from './store/committed-feed.ts';
import { openStore } from './store/open-store.ts';
import type { LogPage, Store, StoreReader, StoreWriter, VersionRow } from './store/store.ts';
import { eventDigest } from './event-digest.ts';
import { inlineLayers, type ItemLayers } from './inline-layers.ts';
import { hasAgentReports, memoryAgentReports, type AgentReportTable } from './store/agent-reports.ts';

/** Longest audit `detail` stored; details are short reasons, never payloads. */
const AUDIT_DETAIL_MAX_CHARS = 500;
/** A safe bound for one `eventsAfter` page. */
const EVENTS_PAGE_MAX = 10_000;

function checkRef(ref: ItemRef): ItemRef {
  return { namespace: validateNamespace(ref.namespace), name: validateName(ref.name) };
}

function notFound(ref: ItemRef, detail = ''): AppError {
  return new AppError('not_found', `${itemKey(ref)} does not exist${detail}.`);
}

function identity(row: LiveVersion, kind: ItemKind): ValueIdentity {
  return { namespace: row.namespace, name: row.name, version: row.version, env: row.env, kind, keyId: row.sealed.keyId, keyVersion: row.sealed.keyVersion };
}

function wireLayer(layer: LiveVersion): EnvelopeResponse['layers'][number] {
  return {
    env: layer.env,
    version: layer.version,
    keyId: layer.sealed.keyId,
    keyVersion: layer.sealed.keyVersion,
    ...(layer.sealed.aadVersion === 1 ? {} : { aadVersion: layer.sealed.aadVersion }),
    ...sealedToWire(layer.sealed),
  };
}

/** Items re-sealed between two turns of the event loop by a key rotation. */
const RESEAL_PAGE_ITEMS = 500;

/** Lets I/O (reads, watch streams, health probes) run before the next page; the SQLite engine's calls are synchronous, so awaiting them alone never yields. */
function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Rows re-sealed per write transaction by the start-up AAD migration. */
const AAD_RESEAL_BATCH = 100;

function validateOptions(options: ControlPlaneOptions): void {
  const envs = options.environments;
  if (envs.length === 0 || new Set(envs).size !== envs.length) {
    throw new SettingError(`--environments (${ENV_PREFIX}ENVIRONMENTS)`, 'list one or more distinct environments, least to most specific, e.g. base,dev,staging,prod');
  }
  for (const env of envs) {
    if (!SEGMENT_RE.test(env)) {
      throw new SettingError(`--environments (${ENV_PREFIX}ENVIRONMENTS)`, `"${env}" is not a valid environment name (a-z, 0-9, ".", "_", "-")`);
    }
  }
  if (!Number.isInteger(options.maxVersionsPerItem) || options.maxVersionsPerItem < 1) {
    throw new SettingError(`--max-versions (${ENV_PREFIX}MAX_VERSIONS)`, 'keep at least 1 version per item');
  }
  if (!Number.isInteger(options.retainEvents) || options.retainEvents < 1) {
    throw new SettingError(`--retain-events (${ENV_PREFIX}RETAIN_EVENTS)`, 'retain at least 1 event');
  }
  if (options.retainAge !== undefined && !(options.retainAge > 0)) {
    throw new SettingError(`--retain-age (${ENV_PREFIX}RETAIN_AGE)`, 'give a positive duration such as 7d, or leave it unset to retain by count only');
  }
  if (!(options.keyMaxAge > 0)) {
    throw new SettingError(`--key-max-age (${ENV_PREFIX}KEY_MAX_AGE)`, 'give a positive duration such as 90d');
  }
}

/** A log event before its digest is taken (distributes over the union). */
type UndigestedEvent = LogEvent extends infer E ? (E extends LogEvent ? Omit<E, 'digest'> : never) : never;

/** The `setRevision` stamp of a change-set member; nothing outside a set. */
const inSet = (setRevision: number | undefined): { setRevision?: number } => (setRevision === undefined ? {} : { setRevision });

interface WriteOutcome<T> {
  readonly result: T;
  readonly events: LogEvent[];
}

class ControlPlaneImpl implements ControlPlane {
  readonly environments: readonly string[];
  readonly agentReports: AgentReportTable;
  readonly #options: ControlPlaneOptions;
  readonly #store: Store;
  readonly #keys: KeyRing;
  readonly #listeners: CommitListeners;
  #fedByStore = false;
  readonly #lostListeners = new Set<(lost: EventsLost) => void>();
  #pendingAudit: Array<{ entry: AuditEntry; at: number }> = [];
  #auditFlush: Promise<void> | undefined;
  #auditWritable = true;
  #closed = false;
  #storeId = '';

  constructor(options: ControlPlaneOptions, store: Store) {
    this.#options = options;
    this.environments = Object.freeze([...options.environments]);
    this.#store = store;
    this.agentReports = hasAgentReports(store) ? store.agentReports : memoryAgentReports();
    this.#keys = new KeyRing(options.kek, store);
    this.#listeners = new CommitListeners(options.logger);
    // Every replica hears every rotation: unwrapped older key versions leave
    // this process's memory (re-unwrapped from the store while still stored).
    this.#listeners.add((events) => {
      for (const event of events) if (event.type === 'keyRotated') this.#keys.forgetBelow(event.namespace, event.keyVersion);
    });
    // An engine shared by several processes (PostgreSQL replicas) delivers
    // every process's commits itself; otherwise this process's writes are all.
    if (hasCommittedFeed(store)) {
      this.#fedByStore = true;
      store.committedEvents.subscribe((events) => this.#listeners.emit(events));
      store.committedEvents.onEventsLost((lost) => {
        for (const listener of [...this.#lostListeners]) listener(lost);
      });
    }
  }

  get #now(): number {
    return this.#options.clock.now();
  }

  /** Reads the store's identity once; a restore happens with the servers stopped. */
  async loadIdentity(): Promise<void> {
    this.#storeId = (await this.#store.read((r) => r.logState())).storeId;
  }

  /** The event with its digest, taken once at write time. */
  #digested(event: UndigestedEvent): LogEvent {
    return { ...event, digest: eventDigest(this.#storeId, event) } as LogEvent;
  }

  /** Refuses to start when the stored DEKs are wrapped by another KEK. */
  async verifyKek(): Promise<void> {
    const deks = await this.#store.read((r) => r.allDeks());
    const kek = this.#keys.kek;
    const setting = `${KEK_FILE_FLAG} / ${KEK_ENV_VAR}`;
    const foreign = deks.find((row) => row.kekId !== kek.id);
    if (foreign) {
      throw new SettingError(
        setting,
        `the store's data keys are wrapped by KEK ${foreign.kekId}, but the configured KEK is ${kek.id}; start with the KEK used last (\`config-sidecar rotate --kek\` moves the keys to a new one)`,
      );
    }
    const sample = deks[0];
    if (sample) {
      try {
        await this.#keys.verify(sample);
      } catch (err) {
        throw new SettingError(setting, `the configured KEK ${kek.id} cannot unwrap the stored data keys (${describeError(err)}); the store may be damaged`);
      }
    }
  }

  /**
   * Re-seals every value still sealed with an older AAD layout under the
   * current one (same key version, same plaintext, no event: readers see the
   * same value and etag). Rows that fail to open are left as they are and
   * logged: they stay unreadable, as before. Returns how many were re-sealed.
   */
  async resealOlderAad(): Promise<number> {
    const pending = await this.#store.read((r) => r.versionsSealedBelowAad(CURRENT_AAD_VERSION));
    let resealed = 0;
    for (let i = 0; i < pending.length; i += AAD_RESEAL_BATCH) {
      const batch = pending.slice(i, i + AAD_RESEAL_BATCH);
      resealed += await this.#write(async (w, keys) => {
        let done = 0;
        for (const ref of batch) {
          const row = await w.getVersion(ref, ref.version);
          const item = await w.getItem(ref);
          if (!row || row.deleted || !item || row.sealed.aadVersion >= CURRENT_AAD_VERSION) continue;
          let plaintext: Buffer;
          try {
            plaintext = await this.#openLayer(row, item.kind, keys);
          } catch {
            continue;
          }
          const dek = await keys.dek(row.namespace, row.sealed.keyVersion);
          try {
            const sealed = seal(dek, plaintext, valueAad(identity(row, item.kind), CURRENT_AAD_VERSION));
            await w.resealVersion(row, row.version, sealedColumns(row.sealed.keyId, row.sealed.keyVersion, sealed, CURRENT_AAD_VERSION));
            done += 1;
          } finally {
            zeroize(plaintext, dek);
          }
        }
        return { result: done, events: [] };
      });
    }
    if (resealed > 0) this.#options.logger.info({ resealed, aadVersion: CURRENT_AAD_VERSION }, 'values re-sealed with the current AAD layout');
    return resealed;
  }

  /** One write transaction with its keys; events reach listeners after commit. */
  async #write<T>(fn: (w: StoreWriter, keys: TxKeys) => Promise<WriteOutcome<T>>, afterCommit?: () => void): Promise<T> {
    let txKeys: TxKeys | undefined;
    try {
      const outcome = await this.#store.write(
        async (w) => {
          txKeys = this.#keys.begin(w);
          const out = await fn(w, txKeys);
          if (out.events.length > 0) {
            await w.compactEvents(this.#options.retainEvents);
            if (this.#options.retainAge) await w.compactEventsCreatedBefore(this.#now - this.#options.retainAge);
          }
          return out;
        },
        (out) => {
          txKeys?.commit();
          afterCommit?.();
          if (!this.#fedByStore) this.#listeners.emit(out.events);
        },
      );
      return outcome.result;
    } finally {
      txKeys?.discard();
    }
  }

  async #prune(w: StoreWriter, ref: ItemRef): Promise<void> {
    const history = await w.versionHistory(ref);
    const item = await w.getItem(ref);
    const ring = new Set(item ? ringMembers(item, history, this.#now).map((member) => member.version) : []);
    const doomed = pruneCandidates(history, this.#options.maxVersionsPerItem, ring);
    if (doomed.length > 0) await w.deleteVersions(ref, doomed);
  }

  /** Seals `value` as the next version of `ref` in `env` and appends ItemChanged. */
  async #writeVersion(
    w: StoreWriter,
    keys: TxKeys,
    ref: ItemRef,
    env: string,
    kind: ItemKind,
    value: Buffer,
    actor: string,
    setRevision?: number,
    ring?: RingWrite,
  ): Promise<WriteOutcome<PutItemResponse>> {
    const now = this.#now;
    await this.#refuseInRollout(w, ref);
    const version = await w.takeNextVersion(ref, kind, now);
    if (ring) {
      const item = await w.getItem(ref);
      await w.setRing(ref, ring.grace ?? item?.ringGrace ?? 0, ring.revokePrevious ? version : (item?.ringFloor ?? 0));
    }
    const key = await keys.current(ref.namespace, now);
    let sealed;
    try {
      sealed = seal(key.dek, value, valueAad({ ...ref, version, env, kind, keyId: ref.namespace, keyVersion: key.version }, CURRENT_AAD_VERSION));
    } finally {
      zeroize(key.dek);
    }
    const revision = await w.nextRevision();
    await w.insertVersion({
      ...ref,
      version,
      env,
      revision,
      createdAt: now,
      createdBy: actor,
      deleted: false,
      sealed: sealedColumns(ref.namespace, key.version, sealed, CURRENT_AAD_VERSION),
    });
    const event = this.#digested({ revision, type: 'itemChanged', namespace: ref.namespace, name: ref.name, kind, version, env, ...inSet(setRevision) });
    await w.appendEvent(event, now);
    await this.#prune(w, ref);
    return { result: { version, revision }, events: [event] };
  }

  /** One active rollout per item: a direct write would bypass its canaries and be overwritten by its completion. */
  async #refuseInRollout(w: StoreReader, ref: ItemRef): Promise<void> {
    const holder = await w.activeRolloutOf(itemKey(ref));
    if (holder !== undefined) {
      throw new AppError('conflict', `${itemKey(ref)} is in active rollout ${holder}; promote or abort it (config-sidecar rollout promote|abort ${holder}) before writing the item directly.`);
    }
  }

  async #openLayer(row: LiveVersion, kind: ItemKind, keys?: TxKeys): Promise<Buffer> {
    const dek = keys ? await keys.dek(row.namespace, row.sealed.keyVersion) : await this.#keys.dek(row.namespace, row.sealed.keyVersion);
    try {
      return openSealed(dek, row.sealed, valueAad(identity(row, kind), row.sealed.aadVersion));
    } catch (err) {
      this.#options.logger.error(
        { namespace: row.namespace, name: row.name, version: row.version, env: row.env, keyVersion: row.sealed.keyVersion },
        'a stored value failed authentication (corrupted or moved row)',
      );
      throw new AppError('decryption_failed', `The stored value of ${row.namespace}/${row.name} version ${row.version} failed authentication; the row is damaged or was tampered with.`, {
        cause: err,
      });
    } finally {
      zeroize(dek);
    }
  }

  // --- items -------------------------------------------------------------------

  async putItem(refIn: ItemRef, env: string, kind: ItemKind, value: Buffer, actor: string, ring?: RingWrite): Promise<PutItemResponse> {
    const ref = checkRef(refIn);
    chainFor(env, this.environments);
    if (kind !== 'config' && kind !== 'secret') throw new AppError('invalid_argument', 'kind must be "config" or "secret".');
    if (kind === 'config') assertJson(value);
    return this.#write((w, keys) => this.#writeVersion(w, keys, ref, env, kind, value, actor, undefined, ring));
  }

  async #resolve(ref: ItemRef, env: string) {
    const chain = chainFor(env, this.environments);
    const snapshot = await this.#store.read(async (r) => {
      const item = await r.getItem(ref);
      if (!item || item.deleted) return undefined;
      return { item, current: await r.currentVersions(ref) };
    });
    if (!snapshot) throw notFound(ref);
    const resolved = resolveLayers(snapshot.item.kind, snapshot.current, chain);
    if (!resolved) throw notFound(ref, ` in environment ${env} or the environments it inherits from`);
    return resolved;
  }

  async getItem(refIn: ItemRef, env: string): Promise<ItemValue> {
    const ref = checkRef(refIn);
    return this.#valueOf(ref, env, await this.#resolve(ref, env));
  }

  async #valueOf(ref: ItemRef, env: string, resolved: ResolvedLayers): Promise<ItemValue> {
    const plaintexts: Buffer[] = [];
    try {
      for (const layer of resolved.layers) plaintexts.push(await this.#openLayer(layer, resolved.kind));
    } catch (err) {
      zeroize(...plaintexts);
      throw err;
    }
    const value = resolved.kind === 'config' ? mergeConfigBuffers(plaintexts) : (plaintexts[0] as Buffer);
    return { ...ref, kind: resolved.kind, env, version: resolved.version, revision: resolved.revision, etag: resolved.etag, value };
  }

  /**
   * One snapshot of what a ring read serves: the resolved current layers and,
   * per ring member of the serving (most specific) layer, its sealed row.
   */
  async #ringSnapshot(ref: ItemRef, env: string): Promise<{ resolved: ResolvedLayers; members: Array<{ member: RingMember; row: LiveVersion }> }> {
    const chain = chainFor(env, this.environments);
    const now = this.#now;
    const snapshot = await this.#store.read(async (r: StoreReader) => {
      const item = await r.getItem(ref);
      if (!item || item.deleted) return undefined;
      const current = await r.currentVersions(ref);
      const resolved = resolveLayers(item.kind, current, chain);
      if (!resolved) return { resolved, members: [] };
      const serving = resolved.layers.at(-1) as LiveVersion;
      const members: Array<{ member: RingMember; row: LiveVersion }> = [];
      for (const member of ringMembers(item, await r.versionHistory(ref), now, serving.env)) {
        const row: VersionRow | undefined = await r.getVersion(ref, member.version);
        if (row && !row.deleted) members.push({ member, row });
      }
      return { resolved, members };
    });
    if (!snapshot) throw notFound(ref);
    if (!snapshot.resolved) throw notFound(ref, ` in environment ${env} or the environments it inherits from`);
    return { resolved: snapshot.resolved, members: snapshot.members };
  }

  /** A ring member's layers: the current ones with the serving layer replaced by the member's version. */
  #memberLayers(resolved: ResolvedLayers, row: LiveVersion): LiveVersion[] {
    return [...resolved.layers.slice(0, -1), row];
  }

  async #openLayers(layers: readonly LiveVersion[], kind: ItemKind): Promise<Buffer> {
    const plaintexts: Buffer[] = [];
    try {
      for (const layer of layers) plaintexts.push(await this.#openLayer(layer, kind));
    } catch (err) {
      zeroize(...plaintexts);
      throw err;
    }
    return kind === 'config' ? mergeConfigBuffers(plaintexts) : (plaintexts[0] as Buffer);
  }

  async getRing(refIn: ItemRef, env: string): Promise<ItemRing> {
    const ref = checkRef(refIn);
    const { resolved, members } = await this.#ringSnapshot(ref, env);
    const kind = resolved.kind;
    const current = { version: resolved.version, value: await this.#openLayers(resolved.layers, kind) };
    const previous: Array<ItemRing['previous'][number]> = [];
    try {
      for (const { member, row } of members) {
        previous.push({ version: member.version, value: await this.#openLayers(this.#memberLayers(resolved, row), kind), retiredAt: member.retiredAt, expiresAt: member.expiresAt });
      }
    } catch (err) {
      zeroize(current.value, ...previous.map((p) => p.value));
      throw err;
    }
    return {
      ...ref,
      kind,
      env,
      revision: resolved.revision,
      etag: ringEtag(resolved.etag, previous.map((p) => p.version)),
      current,
      previous,
    };
  }

  async getRingEnvelope(refIn: ItemRef, env: string): Promise<RingEnvelopeResponse> {
    const ref = checkRef(refIn);
    const { resolved, members } = await this.#ringSnapshot(ref, env);
    return {
      ...this.#envelopeOf(ref, env, resolved),
      previous: members.map(({ member, row }) => ({
        version: member.version,
        retiredAt: new Date(member.retiredAt).toISOString(),
        expiresAt: new Date(member.expiresAt).toISOString(),
        layers: this.#memberLayers(resolved, row).map(wireLayer),
      })),
    };
  }

  async deleteItem(refIn: ItemRef, env: string | undefined, actor: string): Promise<{ revision: number }> {
    const ref = checkRef(refIn);
    if (env !== undefined) chainFor(env, this.environments);
    const { revision } = await this.#write((w) => this.#deleteStep(w, ref, env, actor));
    return { revision };
  }

  /** Deletes one layer (a tombstone version) or the whole item and appends ItemDeleted. */
  async #deleteStep(w: StoreWriter, ref: ItemRef, env: string | undefined, actor: string, setRevision?: number): Promise<WriteOutcome<{ revision: number; version: number }>> {
    const now = this.#now;
    await this.#refuseInRollout(w, ref);
    const item = await w.getItem(ref);
    if (!item || item.deleted) throw notFound(ref);
    if (env === undefined) {
      await w.deleteAllVersions(ref);
      await w.markItemDeleted(ref, now);
      const revision = await w.nextRevision();
      const event = this.#digested({ revision, type: 'itemDeleted', namespace: ref.namespace, name: ref.name, env: '', version: item.lastVersion, ...inSet(setRevision) });
      await w.appendEvent(event, now);
      return { result: { revision, version: item.lastVersion }, events: [event] };
    }
    const layer = (await w.currentVersions(ref)).find((row) => row.env === env);
    if (!layer || layer.deleted) throw notFound(ref, ` in environment ${env}`);
    const version = await w.takeNextVersion(ref, item.kind, now);
    const revision = await w.nextRevision();
    await w.insertVersion({ ...ref, version, env, revision, createdAt: now, createdBy: actor, deleted: true, sealed: null });
    const event = this.#digested({ revision, type: 'itemDeleted', namespace: ref.namespace, name: ref.name, env, version, ...inSet(setRevision) });
    await w.appendEvent(event, now);
    await this.#prune(w, ref);
    return { result: { revision, version }, events: [event] };
  }

  /** Validates a change set's members (refs, envs, no duplicates, kinds, JSON). */
  #checkChanges(changesIn: readonly ChangeOp[]): ChangeOp[] {
    if (changesIn.length === 0) throw new AppError('invalid_argument', 'A change set needs at least one change.');
    const seen = new Set<string>();
    const changes = changesIn.map((change) => {
      const ref = checkRef(change.ref);
      if (change.env !== undefined) chainFor(change.env, this.environments);
      const key = `${itemKey(ref)}@${change.env ?? '*'}`;
      if (seen.has(key)) throw new AppError('invalid_argument', `${itemKey(ref)} appears twice in the change set${change.env ? ` (env ${change.env})` : ''}; give each item and environment once.`);
      seen.add(key);
      if (change.op === 'put') {
        if (change.kind !== 'config' && change.kind !== 'secret') throw new AppError('invalid_argument', 'kind must be "config" or "secret".');
        if (change.kind === 'config') assertJson(change.value);
      }
      return { ...change, ref };
    });
    return changes;
  }

  async writeChangeSet(changesIn: readonly ChangeOp[], actor: string): Promise<ChangeSetResponse> {
    const changes = this.#checkChanges(changesIn);
    return this.#write(async (w, keys) => {
      // Each member takes exactly one revision, so the set's last one is known
      // before the first event is written (the write lock is held from here on).
      const setRevision = (await w.logState()).revision + changes.length;
      const items: ChangeSetResponse['items'] = [];
      const events: LogEvent[] = [];
      for (const change of changes) {
        const outcome =
          change.op === 'put'
            ? await this.#writeVersion(w, keys, change.ref, change.env, change.kind, change.value, actor, setRevision, change.ring)
            : await this.#deleteStep(w, change.ref, change.env, actor, setRevision);
        items.push({ item: itemKey(change.ref), version: outcome.result.version });
        events.push(...outcome.events);
      }
      const last = events.at(-1)?.revision;
      if (last !== setRevision) throw new AppError('internal', `The change set ended at revision ${String(last)}, not the expected ${setRevision}.`);
      return { result: { revision: setRevision, items }, events };
    });
  }

  async list(prefixIn: string, range: ListRange): Promise<ListedPage> {
    const prefix = prefixIn === '' ? '' : validatePrefix(prefixIn).replace(/\/+$/, '');
    // One more than the page, so a page that ends the listing says so (no empty page after it).
    const { items, more, current } = await this.#store.read(async (r) => {
      const rows = await r.listItems(prefix, { after: range.after, limit: range.limit + 1 });
      const page = rows.slice(0, range.limit);
      return { items: page, more: rows.length > range.limit, current: await r.currentLayersOf(page) };
    });
    const byItem = new Map<string, typeof current>();
    for (const row of current) {
      const key = itemKey(row);
      const rows = byItem.get(key) ?? [];
      rows.push(row);
      byItem.set(key, rows);
    }
    const out: ListResponse['items'] = [];
    for (const item of items) {
      const rows = byItem.get(itemKey(item)) ?? [];
      const envs = this.environments.filter((env) => rows.some((row) => row.env === env && !row.deleted));
      if (envs.length === 0) continue;
      out.push({
        namespace: item.namespace,
        name: item.name,
        kind: item.kind,
        version: item.lastVersion,
        revision: Math.max(...rows.map((row) => row.revision)),
        envs,
      });
    }
    const last = items.at(-1);
    return { items: out, ...(more && last ? { next: { namespace: last.namespace, name: last.name } } : {}) };
  }

  async history(refIn: ItemRef): Promise<HistoryResponse> {
    const ref = checkRef(refIn);
    const snapshot = await this.#store.read(async (r) => {
      const item = await r.getItem(ref);
      if (!item || item.deleted) return undefined;
      return { item, versions: await r.versionHistory(ref) };
    });
    if (!snapshot) throw notFound(ref);
    return {
      ...ref,
      kind: snapshot.item.kind,
      versions: snapshot.versions.map((v) => ({
        version: v.version,
        env: v.env,
        revision: v.revision,
        createdAt: new Date(v.createdAt).toISOString(),
        createdBy: v.createdBy,
        deleted: v.deleted,
      })),
    };
  }

  async rollback(refIn: ItemRef, version: number, actor: string): Promise<PutItemResponse> {
    const ref = checkRef(refIn);
    if (!Number.isInteger(version) || version < 1) throw new AppError('invalid_argument', 'version must be a positive integer.');
    return this.#write(async (w, keys) => {
      const item = await w.getItem(ref);
      if (!item || item.deleted) throw notFound(ref);
      const old = await w.getVersion(ref, version);
      if (!old) throw new AppError('not_found', `${itemKey(ref)} has no version ${version} (never written, or pruned).`);
      if (old.deleted) throw new AppError('invalid_argument', `Version ${version} of ${itemKey(ref)} is a deletion marker; roll back to a version with a value.`);
      const plaintext = await this.#openLayer(old, item.kind, keys);
      try {
        return await this.#writeVersion(w, keys, ref, old.env, item.kind, plaintext, actor);
      } finally {
        zeroize(plaintext);
      }
    });
  }

  // --- keys ---------------------------------------------------------------------

  async rotateNamespace(namespaceIn: string, actor: string, options: RotateOptions = {}): Promise<RotateResponse> {
    const namespace = validateNamespace(namespaceIn);
    const logger = this.#options.logger;
    const retire = options.retirePrevious === true;
    const result = await this.#write(async (w, keys) => {
      const now = this.#now;
      if (retire) {
        // A rollout's candidate is sealed under the key version it started with; retiring that would destroy it.
        const held = (await w.activeRolloutItems()).find((r) => parseItemPath(r.item).namespace === namespace);
        if (held) throw new AppError('conflict', `${held.item} is in active rollout ${held.rolloutId}, whose candidate is sealed under an older key of ${namespace}; promote or abort it before retiring previous keys.`);
      }
      const next = await keys.rotate(namespace, now);
      let resealed = 0;
      const kinds = new Map<string, ItemKind>();
      const kindOf = async (row: LiveVersion): Promise<ItemKind> => {
        let kind = kinds.get(row.name);
        if (!kind) {
          kind = (await w.getItem(row))?.kind ?? 'secret';
          kinds.set(row.name, kind);
        }
        return kind;
      };
      try {
        // Retiring re-seals history too, so no row needs an older key afterwards.
        // In pages, yielding between them: reads (their own snapshot) and the
        // watch streams keep answering while 100k values are re-sealed.
        for (let after: string | undefined = ''; after !== undefined; ) {
          const page = await w.resealPage(namespace, after, RESEAL_PAGE_ITEMS, retire);
          after = page.next;
          for (const row of page.rows) {
            if (row.deleted) continue;
            const kind = await kindOf(row);
            let plaintext: Buffer;
            try {
              plaintext = await this.#openLayer(row, kind, keys);
            } catch (err) {
              // A damaged row stays under its old key (still unreadable, still
              // reported on read); it must not block rotating everything else.
              logger.error({ namespace, name: row.name, version: row.version, err: describeError(err) }, 'rotation skipped a value that failed authentication');
              continue;
            }
            try {
              const sealed = seal(next.dek, plaintext, valueAad({ ...identity(row, kind), keyId: namespace, keyVersion: next.version }, CURRENT_AAD_VERSION));
              await w.resealVersion(row, row.version, sealedColumns(namespace, next.version, sealed, CURRENT_AAD_VERSION));
              resealed += 1;
            } finally {
              zeroize(plaintext);
            }
          }
          kinds.clear(); // names are disjoint between pages
          if (after !== undefined) await yieldToLoop();
        }
      } finally {
        zeroize(next.dek);
      }
      const retiredVersions = retire ? await w.deleteDeksBelow(namespace, next.version) : [];
      const revision = await w.nextRevision();
      const event = this.#digested({ revision, type: 'keyRotated', namespace, keyVersion: next.version });
      await w.appendEvent(event, now);
      logger.info({ namespace, keyVersion: next.version, resealed, retiredVersions, actor, revision }, retire ? 'data key rotated; older versions retired' : 'data key rotated');
      const out: RotateResponse = { namespace, keyVersion: next.version, revision, ...(retire ? { retiredVersions, resealed } : {}) };
      return { result: out, events: [event] };
    });
    // The destroyed wrapped keys must not linger in the engine's logs (PostgreSQL: see docs/SERVER.md).
    if (retire && !(await this.#store.scrub())) {
      logger.warn({ namespace }, 'copies of the retired wrapped keys may remain in the write-ahead log until the next checkpoint');
    }
    return result;
  }

  async namespacesWithKeys(): Promise<string[]> {
    return (await this.#store.read((r) => r.currentDeks())).map((row) => row.namespace);
  }

  async rotateDueKeys(actor: string): Promise<RotateResponse[]> {
    const cutoff = this.#now - this.#options.keyMaxAge;
    const due = (await this.#store.read((r) => r.currentDeks())).filter((row) => row.createdAt <= cutoff);
    const rotated: RotateResponse[] = [];
    for (const row of due) {
      try {
        rotated.push(await this.rotateNamespace(row.namespace, actor));
      } catch (err) {
        this.#options.logger.error({ namespace: row.namespace, err: describeError(err) }, 'age-policy rotation failed; will retry on the next check');
      }
    }
    return rotated;
  }

  async rotateKek(next: KekProvider): Promise<{ rewrapped: number }> {
    const current = this.#keys.kek;
    const result = await this.#write(
      async (w) => {
        let rewrapped = 0;
        for (const row of await w.allDeks()) {
          if (row.kekId === next.id) continue;
          if (row.kekId !== current.id) {
            throw new AppError('decryption_failed', `The data key ${row.namespace}#${row.version} is wrapped by KEK ${row.kekId}, not the configured ${current.id}.`);
          }
          const context = dekContext(row.namespace, row.version);
          const dek = await current.unwrap(row.wrapped, context);
          try {
            await w.rewrapDek(row.namespace, row.version, await next.wrap(dek, context), next.id);
          } finally {
            zeroize(dek);
          }
          rewrapped += 1;
        }
        this.#options.logger.info({ from: current.id, to: next.id, rewrapped }, 'KEK rotated');
        return { result: { rewrapped }, events: [] };
      },
      () => this.#keys.replaceKek(next),
    );
    // The DEKs wrapped by the old KEK must not linger in the engine's logs.
    if (!(await this.#store.scrub())) {
      this.#options.logger.warn('copies of the old wrapped keys may remain in the write-ahead log until the next checkpoint');
    }
    return result;
  }

  // --- agent-facing -------------------------------------------------------------------

  async getEnvelope(refIn: ItemRef, env: string): Promise<EnvelopeResponse> {
    const ref = checkRef(refIn);
    return this.#envelopeOf(ref, env, await this.#resolve(ref, env));
  }

  #envelopeOf(ref: ItemRef, env: string, resolved: ResolvedLayers): EnvelopeResponse {
    return { ...ref, kind: resolved.kind, env, version: resolved.version, revision: resolved.revision, etag: resolved.etag, layers: resolved.layers.map(wireLayer) };
  }

  async getDeks(namespaceIn: string): Promise<DekSet> {
    const namespace = validateNamespace(namespaceIn);
    const now = this.#now;
    // Only what agents can need: the current key, the keys of current values and of ring members within their grace.
    const found = await this.#store.read(async (r) => {
      const current = await r.currentDek(namespace);
      if (!current) return undefined;
      const inUse = new Set<number>(await r.keyVersionsInUse(namespace));
      for (const item of await r.ringItemsIn(namespace)) {
        for (const member of ringMembers(item, await r.versionHistory(item), now)) if (member.keyVersion !== null) inUse.add(member.keyVersion);
      }
      return { current: current.version, inUse: [...inUse] };
    });
    if (!found) throw new AppError('not_found', `The namespace ${namespace} has no data key yet (nothing was written to it).`);
    const versions = [...new Set([...found.inUse, found.current])].sort((a, b) => a - b);
    const keys: Array<{ version: number; dek: Buffer }> = [];
    try {
      for (const version of versions) keys.push({ version, dek: await this.#keys.dek(namespace, version) });
    } catch (err) {
      zeroize(...keys.map((k) => k.dek));
      throw err;
    }
    return { namespace, keyId: namespace, currentVersion: found.current, keys };
  }

  // --- staged rollouts ---------------------------------------------------------------

  /** One itemChanged per item (no new version) so every agent serving it asks again; consecutive revisions as one set. */
  async #touch(w: StoreWriter, record: RolloutRecord): Promise<LogEvent[]> {
    const now = this.#now;
    const setRevision = (await w.logState()).revision + record.items.length;
    const events: LogEvent[] = [];
    for (const item of record.items) {
      const ref = parseItemPath(item);
      const row = await w.getItem(ref);
      const put = record.candidate.find((c): c is Extract<CandidateChange, { op: 'put' }> => c.op === 'put' && c.item === item);
      const revision = await w.nextRevision();
      const event = this.#digested({ revision, type: 'itemChanged', namespace: ref.namespace, name: ref.name, kind: row?.kind ?? put?.kind ?? 'config', version: row?.lastVersion ?? 0, env: '', ...inSet(setRevision) });
      await w.appendEvent(event, now);
      events.push(event);
    }
    return events;
  }

  async startRollout(start: RolloutStart, actor: string): Promise<RolloutRecord> {
    const changes = this.#checkChanges(start.changes);
    return this.#write(async (w, keys) => {
      const now = this.#now;
      const items = [...new Set(changes.map((c) => itemKey(c.ref)))];
      const candidate: CandidateChange[] = [];
      for (const change of changes) {
        const item = itemKey(change.ref);
        const existing = await w.getItem(change.ref);
        if (change.op === 'delete') {
          if (!existing || existing.deleted) throw notFound(change.ref);
          candidate.push({ op: 'delete', item, env: change.env ?? '' });
          continue;
        }
        if (existing && !existing.deleted && existing.kind !== change.kind) {
          throw new AppError('conflict', `${item} is a ${existing.kind}; delete it before writing it as a ${change.kind}.`);
        }
        const key = await keys.current(change.ref.namespace, now);
        try {
          const sealed = seal(key.dek, change.value, rolloutAad(start.id, item, change.env, change.kind));
          candidate.push({ op: 'put', item, env: change.env, kind: change.kind, keyVersion: key.version, sealed: sealedToWire(sealed) });
        } finally {
          zeroize(key.dek);
        }
      }
      await w.setRolloutItems(start.id, items);
      const draft: RolloutRecord = {
        id: start.id,
        state: 'rolling',
        steps: [...start.steps],
        step: 0,
        bakeSeconds: start.bakeSeconds,
        maxUnhealthy: start.maxUnhealthy,
        items,
        canary: [...start.canary],
        unhealthy: [],
        createdAt: now,
        createdBy: actor,
        stepStartedAt: now,
        revision: 0,
        candidate,
      };
      const events = start.canary.length > 0 ? await this.#touch(w, draft) : [];
      const record = { ...draft, revision: events.at(-1)?.revision ?? (await w.logState()).revision };
      await w.insertRollout({ ...rolloutToRow(record, now), leaseOwner: '', leaseUntil: 0 });
      return { result: record, events };
    });
  }

  async changeRollout(id: string, change: (record: RolloutRecord) => RolloutChange | undefined, actor: string): Promise<RolloutRecord> {
    return this.#write(async (w, keys) => {
      const row = await w.getRollout(id);
      if (!row) throw new AppError('not_found', `There is no rollout ${id}.`);
      const next = change(rolloutFromRow(row));
      if (!next) return { result: rolloutFromRow(row), events: [] };
      let record = next.record;
      let events: LogEvent[] = [];
      // Released before the completion writes them (the write path refuses items of active rollouts).
      if (next.complete || !isActive(record.state)) await w.setRolloutItems(id, []);
      if (next.complete) {
        const setRevision = (await w.logState()).revision + record.candidate.length;
        for (const c of record.candidate) {
          const ref = parseItemPath(c.item);
          if (c.op === 'delete') {
            events.push(...(await this.#deleteStep(w, ref, c.env === '' ? undefined : c.env, actor, setRevision)).events);
            continue;
          }
          const dek = await keys.dek(ref.namespace, c.keyVersion);
          let value: Buffer;
          try {
            value = openSealed(dek, sealedFromWire(c.sealed), rolloutAad(id, c.item, c.env, c.kind));
          } finally {
            zeroize(dek);
          }
          try {
            events.push(...(await this.#writeVersion(w, keys, ref, c.env, c.kind, value, actor, setRevision)).events);
          } finally {
            zeroize(value);
          }
        }
        record = { ...record, state: 'completed', revision: setRevision };
      } else if (next.touch) {
        events = await this.#touch(w, record);
        record = { ...record, revision: events.at(-1)?.revision ?? record.revision };
      }
      await w.updateRollout({ ...rolloutToRow(record, this.#now), leaseOwner: row.leaseOwner, leaseUntil: row.leaseUntil });
      return { result: record, events };
    });
  }

  async getRollout(id: string): Promise<RolloutRecord | undefined> {
    const row = await this.#store.read((r) => r.getRollout(id));
    return row ? rolloutFromRow(row) : undefined;
  }

  async listRollouts(limit: number): Promise<RolloutRecord[]> {
    return (await this.#store.read((r) => r.listRollouts(limit))).map(rolloutFromRow);
  }

  activeRolloutIds(): Promise<string[]> {
    return this.#store.read((r) => r.rolloutIdsIn(ACTIVE_ROLLOUT_STATES));
  }

  async activeRolloutOf(ref: ItemRef): Promise<RolloutRecord | undefined> {
    const row = await this.#store.read(async (r) => {
      const id = await r.activeRolloutOf(itemKey(ref));
      return id === undefined ? undefined : r.getRollout(id);
    });
    return row ? rolloutFromRow(row) : undefined;
  }

  takeRolloutLease(id: string, owner: string, ttl: Milliseconds): Promise<boolean> {
    const now = this.#now;
    return this.#store.write((w) => w.takeRolloutLease(id, owner, now, now + ttl));
  }

  releaseRolloutLeases(owner: string): Promise<number> {
    return this.#store.write((w) => w.releaseRolloutLeases(owner));
  }

  /**
   * The item's layers with the rollout's members applied: each put re-sealed
   * under the namespace's current key as the version the completion will
   * write (writes to the item wait for the rollout, so the number holds),
   * with the rollout's revision, so its ETag differs from the stable one.
   */
  async #candidateResolved(ref: ItemRef, env: string, rolloutId: string): Promise<ResolvedLayers> {
    const chain = chainFor(env, this.environments);
    const item = itemKey(ref);
    const snap = await this.#store.read(async (r) => {
      const row = await r.getRollout(rolloutId);
      if (!row) return undefined;
      const found = await r.getItem(ref);
      return { record: rolloutFromRow(row), found, current: found && !found.deleted ? await r.currentVersions(ref) : [], dek: await r.currentDek(ref.namespace) };
    });
    if (!snap) throw new AppError('not_found', `There is no rollout ${rolloutId}.`);
    const { record, found } = snap;
    if (!isActive(record.state)) throw new AppError('conflict', `Rollout ${rolloutId} is ${record.state}; its candidate is no longer served (read without ?rollout).`);
    if (!record.items.includes(item)) throw new AppError('not_found', `${item} is not part of rollout ${rolloutId}.`);
    let rows: VersionRow[] = [...snap.current];
    let kind: ItemKind | undefined = found && !found.deleted ? found.kind : undefined;
    let version = found?.lastVersion ?? 0;
    for (const c of record.candidate) {
      if (c.item !== item) continue;
      if (c.op === 'delete' && c.env === '') {
        rows = [];
        kind = undefined;
        continue;
      }
      version += 1;
      const base = { ...ref, version, env: c.env, revision: record.revision, createdAt: record.createdAt, createdBy: record.createdBy };
      if (c.op === 'delete') {
        rows = [...rows.filter((v) => v.env !== c.env), { ...base, deleted: true, sealed: null }];
        continue;
      }
      if (!snap.dek) throw new AppError('internal', `The namespace ${ref.namespace} has no data key.`);
      kind = c.kind;
      const [held, current] = [await this.#keys.dek(ref.namespace, c.keyVersion), await this.#keys.dek(ref.namespace, snap.dek.version)];
      let value: Buffer | undefined;
      try {
        value = openSealed(held, sealedFromWire(c.sealed), rolloutAad(rolloutId, item, c.env, c.kind));
        const sealed = seal(current, value, valueAad({ ...ref, version, env: c.env, kind: c.kind, keyId: ref.namespace, keyVersion: snap.dek.version }, CURRENT_AAD_VERSION));
        rows = [...rows.filter((v) => v.env !== c.env), { ...base, deleted: false, sealed: sealedColumns(ref.namespace, snap.dek.version, sealed, CURRENT_AAD_VERSION) }];
      } finally {
        zeroize(held, current, value);
      }
    }
    const resolved = kind === undefined ? undefined : resolveLayers(kind, rows, chain);
    if (!resolved) throw notFound(ref, ` in environment ${env} as rollout ${rolloutId} leaves it`);
    return { ...resolved, revision: Math.max(resolved.revision, record.revision) };
  }

  async candidateEnvelope(refIn: ItemRef, env: string, rolloutId: string): Promise<EnvelopeResponse> {
    const ref = checkRef(refIn);
    return this.#envelopeOf(ref, env, await this.#candidateResolved(ref, env, rolloutId));
  }

  async candidateItem(refIn: ItemRef, env: string, rolloutId: string): Promise<ItemValue> {
    const ref = checkRef(refIn);
    return this.#valueOf(ref, env, await this.#candidateResolved(ref, env, rolloutId));
  }

  async keyAges(): Promise<KeyAgeView[]> {
    const now = this.#now;
    const rows = await this.#store.read((r) => r.currentDeks());
    return rows
      .map((row) => ({
        namespace: row.namespace,
        version: row.version,
        createdAt: new Date(row.createdAt).toISOString(),
        ageSeconds: Math.max(0, Math.floor((now - row.createdAt) / 1000)),
        rotationDueAt: new Date(row.createdAt + this.#options.keyMaxAge).toISOString(),
      }))
      .sort((a, b) => (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : 0));
  }

  // --- event log ---------------------------------------------------------------------

  async currentRevision(): Promise<number> {
    return (await this.#store.read((r) => r.logState())).revision;
  }

  async oldestRetainedRevision(): Promise<number> {
    return (await this.#store.read((r) => r.logState())).compactedThrough + 1;
  }

  async eventsAfter(after: number, limit: number): Promise<LogEvent[]> {
    const bounded = Math.max(0, Math.min(Math.trunc(limit), EVENTS_PAGE_MAX));
    if (bounded === 0) return [];
    return this.#store.read((r) => r.eventsAfter(Math.max(0, Math.trunc(after)), bounded));
  }

  sealedLayers(refs: readonly ItemRef[]): Promise<Map<string, ItemLayers>> {
    const unique = new Map(refs.map((ref) => [itemKey(ref), ref]));
    return this.#store.read(async (r) => {
      const out = new Map<string, ItemLayers>();
      for (const [key, ref] of unique) {
        const item = await r.getItem(ref);
        // Canaries and the rest serve different values of an item in an active rollout: every agent asks (candidate-aware read path).
        if (await r.activeRolloutOf(key)) {
          out.set(key, { kind: item?.kind, deleted: false, revision: 0, layers: undefined });
          continue;
        }
        out.set(key, item && !item.deleted ? inlineLayers(item.kind, await r.currentVersions(ref), this.environments) : { kind: item?.kind, deleted: true, revision: 0, layers: [] });
      }
      return out;
    });
  }

  logHead(): Promise<LogPage> {
    return this.#store.read((r) => r.logHead());
  }

  logPage(after: number, limit: number): Promise<LogPage> {
    const bounded = Math.max(1, Math.min(Math.trunc(limit), EVENTS_PAGE_MAX));
    return this.#store.read((r) => r.logPage(Math.max(0, Math.trunc(after)), bounded));
  }

  onCommitted(listener: (events: readonly LogEvent[]) => void): () => void {
    return this.#listeners.add(listener);
  }

  onEventsLost(listener: (lost: EventsLost) => void): () => void {
    const slot = (lost: EventsLost): void => listener(lost);
    this.#lostListeners.add(slot);
    return () => {
      this.#lostListeners.delete(slot);
    };
  }

  // --- audit, backup, close ---------------------------------------------------------------

  /**
   * Audit entries arriving together are written in one transaction: every
   * secret read is audited, and a commit per read would make reads wait on fsync.
   */
  get auditWritable(): boolean {
    return this.#auditWritable;
  }

  async compactAudit(maxAge: Milliseconds, maxRows: number): Promise<{ age: number; rows: number }> {
    const cutoff = this.#now - maxAge;
    return this.#store.write((w) => w.compactAudit(cutoff, maxRows));
  }

  audit(entry: AuditEntry): Promise<void> {
    this.#pendingAudit.push({ entry, at: this.#now });
    if (!this.#auditFlush) {
      const flush = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
        const batch = this.#pendingAudit;
        this.#pendingAudit = [];
        this.#auditFlush = undefined;
        await this.#store.write(async (w) => {
          for (const { entry: e, at } of batch) {
            await w.insertAudit({
              at,
              subject: e.subject,
              action: e.action,
              target: e.target,
              outcome: e.outcome,
              detail: (e.detail ?? '').slice(0, AUDIT_DETAIL_MAX_CHARS),
            });
          }
        });
      });
      flush.then(
        () => {
          this.#auditWritable = true;
        },
        // Callers that do not await still must not crash the process on a failed flush.
        (err: unknown) => {
          this.#auditWritable = false;
          this.#options.logger.error({ err: describeError(err), entries: 'audit' }, 'writing the audit log failed');
        },
      );
      this.#auditFlush = flush;
    }
    return this.#auditFlush;
  }

  async backup(toFile: string): Promise<void> {
    await this.#store.backup(toFile);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#auditFlush?.catch(() => undefined);
    // The store waits for the write in flight, whose listeners still hear it.
    await this.#store.close();
    this.#listeners.clear();
    this.#lostListeners.clear();
    this.#keys.close();
  }
}

/**
 * Opens the store (applying migrations), checks the KEK against the stored
 * keys and returns the control plane. Throws `SettingError` naming the setting
 * for a bad option or a KEK that does not match the store.
 */
export async function openControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  validateOptions(options);
  const store = await openStore({ dataDir: options.dataDir, databaseUrl: options.databaseUrl, now: () => options.clock.now(), logger: options.logger, poolSize: options.databasePoolSize, access: options.storeAccess });
  return openControlPlaneOn(store, options);
}

/**
 * The same on a store the caller opened (an engine not chosen by options, e.g.
 * the conformance tests' PostgreSQL). Takes ownership: `close()` closes it.
 */
export async function openControlPlaneOn(store: Store, options: ControlPlaneOptions): Promise<ControlPlane> {
  validateOptions(options);
  const plane = new ControlPlaneImpl(options, store);
  try {
    await plane.loadIdentity();
    await plane.verifyKek();
    await plane.resealOlderAad();
  } catch (err) {
    await plane.close();
    throw err;
  }
  return plane;
}
