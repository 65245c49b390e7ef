/**
 * Item key → cache keys (one per env), so an event finds every variant of an
 * item: the keys cached or being filled. An item read in one env (the usual
 * case) maps to its key alone: a `Set` per item was ~0.1 KiB of heap per
 * entry.
 */
import { itemKeyOf } from './cache-key.ts';

export class VariantIndex {
  readonly #keys = new Map<string, string | Set<string>>();

  /** The item's cache keys, as a copy (callers delete while iterating). */
  keysOf(item: string): string[] {
    const keys = this.#keys.get(item);
    return keys === undefined ? [] : typeof keys === 'string' ? [keys] : [...keys];
  }

  /** Every tracked cache key. */
  *keys(): Generator<string> {
    for (const keys of this.#keys.values()) {
      if (typeof keys === 'string') yield keys;
      else yield* keys;
    }
  }

  has(key: string): boolean {
    const keys = this.#keys.get(itemKeyOf(key));
    return keys === key || (typeof keys === 'object' && keys.has(key));
  }

  add(key: string): void {
    const item = itemKeyOf(key);
    const keys = this.#keys.get(item);
    if (keys === undefined) this.#keys.set(item, key);
    else if (typeof keys === 'string') {
      if (keys !== key) this.#keys.set(item, new Set([keys, key]));
    } else keys.add(key);
  }

  delete(key: string): void {
    const item = itemKeyOf(key);
    const keys = this.#keys.get(item);
    if (keys === key) this.#keys.delete(item);
    else if (typeof keys === 'object') {
      keys.delete(key);
      if (keys.size === 0) this.#keys.delete(item);
    }
  }

  clear(): void {
    this.#keys.clear();
  }
}
