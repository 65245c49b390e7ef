/**
 * Serialises each watch event once for every stream: the service is
 * registered with an identity response serialiser, and events are encoded here
 * with the proto's own serialiser, so a fan-out to N watchers costs one encode.
 */
import type * as grpc from '@grpc/grpc-js';
import { watchEventToWire, watchServiceDefinition, type WatchEvent } from '../../shared/watch-proto.ts';

/** An event ready to write: its revision and digest (for ordering and bookmarks) and its wire bytes. */
export interface EncodedEvent {
  readonly revision: number;
  readonly digest: string;
  readonly type: WatchEvent['type'];
  readonly namespace?: string;
  /** For item events: the item's kind ('secret' deliveries are audited) and how many sealed layers went inline. */
  readonly kind?: string;
  readonly inlineLayers?: number;
  /** The last revision of the change set the event belongs to, if any. */
  readonly setRevision?: number;
  readonly bytes: Buffer;
}

function watchMethod(): grpc.MethodDefinition<unknown, unknown> {
  const method = watchServiceDefinition().Watch;
  if (!method) throw new Error('watch.proto has no Watch method');
  return method;
}

export function encodeEvent(event: WatchEvent, kind?: string): EncodedEvent {
  const bytes = watchMethod().responseSerialize(watchEventToWire(event));
  return {
    revision: event.revision,
    digest: event.digest ?? '',
    type: event.type,
    ...('namespace' in event ? { namespace: event.namespace } : {}),
    ...(kind !== undefined ? { kind } : event.type === 'itemChanged' ? { kind: event.kind } : {}),
    ...('layers' in event && event.layers ? { inlineLayers: event.layers.length } : {}),
    ...('setRevision' in event && event.setRevision ? { setRevision: event.setRevision } : {}),
    bytes,
  };
}

/** The WatchService definition with pre-encoded responses passed through untouched. */
export function passThroughServiceDefinition(): grpc.ServiceDefinition {
  const method = watchMethod();
  return { Watch: { ...method, responseSerialize: (bytes: unknown) => bytes as Buffer } };
}
