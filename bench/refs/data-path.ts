/**
 * Reference for the cached-read A/B (bench/cached-read-ab.ts): the agent's
 * data path alone — `createDataServer` and the request handler in front of a
 * real `ValueCache` holding N × 1 KiB values — with nothing else of the agent
 * (no watch stream, timers, metrics registry or runtime settings). Between
 * bare node:http and the agent, it says whether a cost is the data path's
 * or the process's. Usage: node data-path.ts <socket-path> [keys]
 * Prints `listening <socket-path>` once ready.
 */
import { rmSync } from 'node:fs';
import { systemClock } from '../../src/shared/clock.ts';
import { createDataServer } from '../../src/agent/data-listeners.ts';
import { release, ValueCache, variantKey } from '../../src/agent/value-cache.ts';
import { ITEMS_NS, VALUE_BYTES } from '../lib/context.ts';
import { keyName } from '../lib/stack.ts';

const socketPath = process.argv[2] ?? '';
const keys = Number(process.argv[3] ?? 200);
const cache = new ValueCache({
  loader: async (ref) => ({ kind: 'secret', version: 1, revision: 1, etag: '"1"', plaintext: Buffer.alloc(VALUE_BYTES, ref.name) }),
  clock: systemClock,
  ttl: 3_600_000,
  maxStale: 60_000,
  maxEntries: 100_000,
  maxBytes: 1 << 28,
  streamDownSince: () => undefined,
});
for (let i = 0; i < keys; i++) release((await cache.read({ namespace: ITEMS_NS, name: keyName(i) }, 'prod')).value);
const prefixes = [ITEMS_NS];
const server = createDataServer('socket', {
  deps: {
    prefixes: () => prefixes,
    podToken: Buffer.from('unused'),
    env: 'prod',
    read: (ref, env) => cache.read(ref, env),
    readCached: (ref, env, key, memo) => cache.readCached(ref, env, key, memo),
    cacheKey: variantKey,
    release: (result) => release(result.value),
  },
  serveSse: () => {},
});
rmSync(socketPath, { force: true });
server.listen(socketPath, () => console.log(`listening ${socketPath}`));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
