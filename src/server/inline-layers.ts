/**
 * The sealed layers a change event carries inline, so an agent applies a
 * change with no request to the server: every live environment layer of the
 * item (ciphertext, key version, version and revision of each), in the order
 * of the environment chain, as GET /v1/envelopes sends them. Items whose
 * layers together exceed the bound go without (the agent refetches them).
 * Ciphertext only: what crosses here is as safe as the envelope endpoint's.
 */
import { sealedToWire } from '../shared/crypto.ts';
import type { ItemKind } from '../shared/protocol.ts';
import type { InlineLayer } from '../shared/watch-proto.ts';
import type { VersionRow } from './store/store.ts';

/**
 * Largest total of sealed bytes (IV + ciphertext + tag of every layer) sent
 * inline in one event; above it the event says `layers_inline: false`. Keeps
 * a hot key's fan-out to thousands of streams cheap and every message far
 * below gRPC's 4 MiB default limit.
 */
export const INLINE_LAYERS_MAX_BYTES = 64 * 1024;

export interface ItemLayers {
  /** The item's kind; undefined when the item never existed. */
  readonly kind: ItemKind | undefined;
  /** True when the item is deleted (or never existed): no live layers. */
  readonly deleted: boolean;
  /** The newest revision among the item's current versions (tombstones included); 0 when none. */
  readonly revision: number;
  /** The live layers, or undefined when they are over the bound. */
  readonly layers: readonly InlineLayer[] | undefined;
}

/** From an item's current versions (tombstones included), ordered by `environments`. */
export function inlineLayers(kind: ItemKind | undefined, current: readonly VersionRow[], environments: readonly string[]): ItemLayers {
  const revision = Math.max(0, ...current.map((row) => row.revision));
  const order = new Map(environments.map((env, i) => [env, i]));
  const live = current
    .filter((row): row is Extract<VersionRow, { deleted: false }> => !row.deleted)
    .sort((a, b) => (order.get(a.env) ?? Infinity) - (order.get(b.env) ?? Infinity));
  let bytes = 0;
  for (const row of live) bytes += row.sealed.iv.length + row.sealed.ciphertext.length + row.sealed.tag.length;
  if (bytes > INLINE_LAYERS_MAX_BYTES) return { kind, deleted: false, revision, layers: undefined };
  return {
    kind,
    deleted: false,
    revision,
    layers: live.map((row) => ({
      env: row.env,
      version: row.version,
      revision: row.revision,
      keyId: row.sealed.keyId,
      keyVersion: row.sealed.keyVersion,
      // As GET /v1/envelopes: absent means layout 1, so the agent can rebuild the AAD.
      ...(row.sealed.aadVersion === 1 ? {} : { aadVersion: row.sealed.aadVersion }),
      ...sealedToWire(row.sealed),
    })),
  };
}

/**
 * The layers an event may carry: exactly the item's state at the event's
 * revision, or nothing (the agent refetches). A later change to the item
 * (its own event follows) means the current layers are not the event's, so
 * the event goes without them; a deleted item's empty set only goes with a
 * whole-item delete, the one event whose state it is.
 */
export function layersForEvent(found: ItemLayers, event: { readonly type: 'itemChanged' | 'itemDeleted'; readonly revision: number; readonly env: string }): readonly InlineLayer[] | undefined {
  if (found.deleted) return event.type === 'itemDeleted' && event.env === '' ? [] : undefined;
  if (found.revision > event.revision) return undefined;
  return found.layers;
}
