/** A cached secret as the data listener's tests hand it to the handler (production/ml/NAME, version 3, revision 7). */
import { rawEtag } from '../../src/agent/item-representation.ts';
import type { CachedValue } from '../../src/agent/value-cache.ts';

export function cachedSecret(name: string): CachedValue {
  return {
    namespace: 'production/ml',
    name,
    env: 'prod',
    kind: 'secret',
    version: 3,
    revision: 7,
    etag: '"3"',
    plaintext: Buffer.from('s3cret'),
    json: Buffer.from('{"value":"s3cret"}'),
    rawEtag: rawEtag('"3"'),
    fetchedAt: 0,
    leases: 0,
    dropped: false,
  };
}
