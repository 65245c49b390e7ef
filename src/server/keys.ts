/**
 * Namespace data keys (DEKs): created on a namespace's first write, stored only
 * wrapped by the KEK, unwrapped on demand into a bounded in-memory cache whose
 * evicted entries are zero-filled. Keys created inside a write transaction stay
 * in a per-transaction set until COMMIT, so a rolled-back rotation can never
 * leave a key in the cache that the database does not hold.
 */
import { LRUCache } from 'lru-cache';
import { newDek, zeroize } from '../shared/crypto.ts';
import { AppError } from '../shared/errors.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { KekProvider } from './control-plane.ts';
import type { DekRow, Store, StoreReader, StoreWriter } from './store/store.ts';

/** Plaintext DEKs kept unwrapped in memory (32 bytes each); misses cost one KEK unwrap. */
export const DEK_CACHE_MAX_ENTRIES = 4096;

/** What a wrapped DEK is bound to (passed to the KEK as context). */
export function dekContext(namespace: string, version: number): string {
  return `dek|${namespace}#${version}`;
}

function cacheKey(namespace: string, version: number): string {
  return `${namespace}#${version}`;
}

export interface NamespaceKey {
  readonly version: number;
  /** A copy the caller owns: zero-fill it when done. */
  readonly dek: Buffer;
}

export class KeyRing {
  #kek: KekProvider;
  readonly #store: Store;
  readonly #cache = new LRUCache<string, Buffer>({
    max: DEK_CACHE_MAX_ENTRIES,
    dispose: (dek) => zeroize(dek),
  });

  constructor(kek: KekProvider, store: Store) {
    this.#kek = kek;
    this.#store = store;
  }

  get kek(): KekProvider {
    return this.#kek;
  }

  /** Switches to a new KEK after its re-wrap committed; cached plaintext DEKs stay valid. */
  replaceKek(next: KekProvider): void {
    this.#kek = next;
  }

  async #unwrap(row: DekRow): Promise<Buffer> {
    if (row.kekId !== this.#kek.id) {
      throw new AppError(
        'decryption_failed',
        `The data key ${row.namespace}#${row.version} is wrapped by KEK ${row.kekId}, not the configured ${this.#kek.id}.`,
      );
    }
    return this.#kek.unwrap(row.wrapped, dekContext(row.namespace, row.version));
  }

  /**
   * A committed DEK version through the cache. Returns a COPY the caller owns
   * and zero-fills: the cached buffer may be evicted (and zero-filled) by any
   * other caller between two awaits, so it never leaves this class.
   */
  async dek(namespace: string, version: number, reader?: StoreReader): Promise<Buffer> {
    const key = cacheKey(namespace, version);
    const cached = this.#cache.get(key);
    if (cached) return Buffer.from(cached);
    const row = reader ? await reader.getDek(namespace, version) : await this.#store.read((r) => r.getDek(namespace, version));
    if (!row) throw new AppError('decryption_failed', `The data key ${namespace}#${version} is missing from the store.`);
    const dek = await this.#unwrap(row);
    const copy = Buffer.from(dek);
    if (this.#cache.has(key)) zeroize(dek);
    else this.#cache.set(key, dek);
    return copy;
  }

  /** Unwraps one stored DEK without caching it (start-up KEK check). */
  async verify(row: DekRow): Promise<void> {
    zeroize(await this.#unwrap(row));
  }

  /** Key handling for one write transaction. */
  begin(writer: StoreWriter): TxKeys {
    return new TxKeys(this, writer, (namespace, version, dek) => this.#cache.set(cacheKey(namespace, version), dek));
  }

  /** Drops (zero-fills) the cached plaintext of a namespace's key versions below `version`. */
  forgetBelow(namespace: string, version: number): void {
    for (const key of [...this.#cache.keys()]) {
      const at = key.lastIndexOf('#');
      if (key.slice(0, at) === namespace && Number(key.slice(at + 1)) < version) this.#cache.delete(key);
    }
  }

  /** Zero-fills every cached DEK. */
  close(): void {
    this.#cache.clear();
  }
}

/** DEKs used and created inside one write transaction. */
export class TxKeys {
  readonly #ring: KeyRing;
  readonly #writer: StoreWriter;
  readonly #publish: (namespace: string, version: number, dek: Buffer) => void;
  readonly #created = new Map<string, { namespace: string; version: number; dek: Buffer }>();

  constructor(ring: KeyRing, writer: StoreWriter, publish: (namespace: string, version: number, dek: Buffer) => void) {
    this.#ring = ring;
    this.#writer = writer;
    this.#publish = publish;
  }

  /** A DEK version, created in this transaction or committed before it; a copy the caller zero-fills. */
  async dek(namespace: string, version: number): Promise<Buffer> {
    const created = this.#created.get(cacheKey(namespace, version));
    if (created) return Buffer.from(created.dek);
    return this.#ring.dek(namespace, version, this.#writer);
  }

  async #create(namespace: string, version: number, now: Milliseconds): Promise<NamespaceKey> {
    const dek = newDek();
    try {
      const kek = this.#ring.kek;
      const wrapped = await kek.wrap(dek, dekContext(namespace, version));
      await this.#writer.insertDek({ namespace, version, wrapped, kekId: kek.id, createdAt: now });
    } catch (err) {
      zeroize(dek);
      throw err;
    }
    this.#created.set(cacheKey(namespace, version), { namespace, version, dek });
    return { version, dek: Buffer.from(dek) };
  }

  /** The namespace's current DEK, created (version 1) on its first write. */
  async current(namespace: string, now: Milliseconds): Promise<NamespaceKey> {
    const row = await this.#writer.currentDek(namespace);
    if (!row) return this.#create(namespace, 1, now);
    return { version: row.version, dek: await this.dek(namespace, row.version) };
  }

  /** Creates the next DEK version; `not_found` when the namespace has none yet. */
  async rotate(namespace: string, now: Milliseconds): Promise<NamespaceKey> {
    const row = await this.#writer.currentDek(namespace);
    if (!row) throw new AppError('not_found', `The namespace ${namespace} has no data key yet (nothing was written to it).`);
    return this.#create(namespace, row.version + 1, now);
  }

  /** After COMMIT: created keys join the shared cache. */
  commit(): void {
    for (const { namespace, version, dek } of this.#created.values()) this.#publish(namespace, version, dek);
    this.#created.clear();
  }

  /** After a rollback (or after commit, harmlessly): zero-fills keys that never became real. */
  discard(): void {
    for (const { dek } of this.#created.values()) zeroize(dek);
    this.#created.clear();
  }
}
