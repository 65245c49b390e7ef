/**
 * Turns log events into wire bytes with the item's sealed layers inline when
 * they are exactly its state at the event (one store read per batch, one
 * encode per event for every stream).
 * A failed read sends the events without layers: agents then refetch, which
 * is slower but never wrong, and the stream's order is kept.
 */
import { itemKey, type ItemRef } from '../../shared/paths.ts';
import { describeError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { LogEvent } from '../control-plane.ts';
import { layersForEvent, type ItemLayers } from '../inline-layers.ts';
import { encodeEvent, type EncodedEvent } from './event-codec.ts';

export type LayerSource = (refs: readonly ItemRef[]) => Promise<Map<string, ItemLayers>>;

const isItemEvent = (event: LogEvent): event is Extract<LogEvent, { type: 'itemChanged' | 'itemDeleted' }> =>
  event.type === 'itemChanged' || event.type === 'itemDeleted';

/**
 * Encodes `events` in order; those `wanted` (by some stream) carry their
 * item's layers, the rest are encoded bare (no stream sends them; they only
 * move bookmarks).
 */
export async function encodeEvents(
  events: readonly LogEvent[],
  source: LayerSource,
  logger: Logger,
  wanted: (event: LogEvent) => boolean = () => true,
): Promise<EncodedEvent[]> {
  const refs = events.filter((e) => isItemEvent(e) && wanted(e)).map((e) => ({ namespace: e.namespace, name: (e as { name: string }).name }));
  let layers: Map<string, ItemLayers> | undefined;
  if (refs.length > 0) {
    try {
      layers = await source(refs);
    } catch (err) {
      logger.warn({ err: describeError(err), revision: events[0]?.revision }, 'reading sealed layers for watch events failed; sending them without (agents refetch)');
    }
  }
  return events.map((event) => {
    if (!isItemEvent(event) || !layers) return encodeEvent(event);
    const found = layers.get(itemKey(event));
    if (!found) return encodeEvent(event);
    const kind = found.kind ?? (event.type === 'itemChanged' ? event.kind : undefined);
    const inline = layersForEvent(found, event);
    return encodeEvent(inline ? { ...event, layers: inline } : event, kind);
  });
}
