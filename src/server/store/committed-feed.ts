/**
 * An optional capability of a `Store`: the engine itself delivers every
 * committed event, from this process and from every other process writing to
 * the same database (PostgreSQL replicas), once each and in revision order.
 * Engines without it (SQLite: one writer process) leave delivery to the
 * writer's after-commit hook.
 */
import type { LogEvent } from '../control-plane.ts';
import type { Store } from './store.ts';

export type CommittedListener = (events: readonly LogEvent[]) => void;

/** Events this process never delivered because retention compacted them first. */
export interface EventsLost {
  /** The last revision delivered before the gap. */
  readonly deliveredRevision: number;
  /** Revisions up to this one were compacted away; delivery resumes after it. */
  readonly compactedThrough: number;
}

export interface CommittedEventFeed {
  /** Every event committed after the store opened, once, in revision order, gap-free. Returns unsubscribe. */
  subscribe(listener: CommittedListener): () => void;
  /** Called when delivery had to skip compacted events (a replica cut off for longer than retention). */
  onEventsLost(listener: (lost: EventsLost) => void): () => void;
}

export interface FeedingStore extends Store {
  readonly committedEvents: CommittedEventFeed;
}

export function hasCommittedFeed(store: Store): store is FeedingStore {
  return typeof (store as Partial<FeedingStore>).committedEvents?.subscribe === 'function';
}
