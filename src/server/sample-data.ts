/**
 * Sample data for `config-sidecar dev` / `npm start`: a few namespaces, a
 * config with environment overlays and secrets, so the printed commands have
 * something to read. Seeded only into an empty store. Secret values are random
 * per data directory, so no real-looking credential is ever shipped.
 */
import { randomBytes } from 'node:crypto';
import type { ItemKind } from '../shared/protocol.ts';
import type { ControlPlane } from './control-plane.ts';

export const SAMPLE_ACTOR = 'sample-data';

interface SampleItem {
  readonly namespace: string;
  readonly name: string;
  readonly env: string;
  readonly kind: ItemKind;
  readonly value: () => Buffer;
}

const json = (value: unknown) => (): Buffer => Buffer.from(JSON.stringify(value), 'utf8');
const randomSecret = (bytes: number) => (): Buffer => Buffer.from(randomBytes(bytes).toString('base64url'), 'utf8');

/** In write order; overlays after their base so versions read naturally. */
export const SAMPLE_ITEMS: readonly SampleItem[] = [
  { namespace: 'production/ml-service', name: 'settings', env: 'base', kind: 'config', value: json({ model: 'resnet-50', batchSize: 8, features: { cache: true, tracing: false }, db: { host: 'db.internal', port: 5432 } }) },
  { namespace: 'production/ml-service', name: 'settings', env: 'staging', kind: 'config', value: json({ features: { tracing: true } }) },
  { namespace: 'production/ml-service', name: 'settings', env: 'prod', kind: 'config', value: json({ batchSize: 64, db: { host: 'db-prod.internal' } }) },
  { namespace: 'production/ml-service', name: 'db-password', env: 'base', kind: 'secret', value: randomSecret(18) },
  { namespace: 'production/ml-service', name: 'db-password', env: 'prod', kind: 'secret', value: randomSecret(24) },
  { namespace: 'production/web', name: 'api-key', env: 'base', kind: 'secret', value: randomSecret(24) },
  { namespace: 'production/web', name: 'feature-flags', env: 'base', kind: 'config', value: json({ newCheckout: false, darkMode: true }) },
  { namespace: 'production/web', name: 'feature-flags', env: 'prod', kind: 'config', value: json({ newCheckout: true }) },
  { namespace: 'staging/ml-service', name: 'settings', env: 'base', kind: 'config', value: json({ model: 'resnet-18', batchSize: 4 }) },
];

/** Writes the sample items into an empty store; does nothing when the store already has events. */
export async function seedSampleData(controlPlane: Pick<ControlPlane, 'currentRevision' | 'putItem' | 'environments'>): Promise<number> {
  if ((await controlPlane.currentRevision()) > 0) return 0;
  let written = 0;
  for (const item of SAMPLE_ITEMS) {
    if (!controlPlane.environments.includes(item.env)) continue;
    const value = item.value();
    try {
      await controlPlane.putItem({ namespace: item.namespace, name: item.name }, item.env, item.kind, value, SAMPLE_ACTOR);
      written++;
    } finally {
      value.fill(0);
    }
  }
  return written;
}
