/**
 * undici's `Pool` without undici's index. The index also loads fetch,
 * WebSocket, EventSource, the cache and mock layers: measured here ~14 MiB RSS
 * and ~50 ms at start, paid by every agent in every pod (and by applications
 * using the client) for nothing they use. This loads the pool and the request
 * API exactly as undici's own index wires them (`Object.assign` of the API onto
 * `Dispatcher.prototype`), and falls back to the index if a future undici
 * moves its files, so the worst case is only the larger footprint.
 */
import { createRequire } from 'node:module';
import type { Pool as UndiciPool } from 'undici';

const require = createRequire(import.meta.url);

export type Pool = UndiciPool;
export type PoolOptions = UndiciPool.Options;

let cached: typeof UndiciPool | undefined;

export function poolClass(): typeof UndiciPool {
  if (cached) return cached;
  try {
    const Pool = require('undici/lib/dispatcher/pool.js') as typeof UndiciPool;
    const Dispatcher = require('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
    const api = require('undici/lib/api/index.js') as object;
    if (typeof (Dispatcher.prototype as { request?: unknown }).request !== 'function') Object.assign(Dispatcher.prototype, api);
    cached = Pool;
  } catch {
    cached = (require('undici') as { Pool: typeof UndiciPool }).Pool;
  }
  return cached;
}

export function createPool(origin: string, options: PoolOptions): Pool {
  const PoolCtor = poolClass();
  return new PoolCtor(origin, options);
}
