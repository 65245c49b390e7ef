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

export interface CommittedEventFeed {
  /** Every event committed after the store opened, once, in revision order, gap-free. Returns unsubscribe. */
  subscribe(listener: CommittedListener): () => void;
}

export interface FeedingStore extends Store {
  readonly committedEvents: CommittedEventFeed;
}

export function hasCommittedFeed(store: Store): store is FeedingStore {
  return typeof (store as Partial<FeedingStore>).committedEvents?.subscribe === 'function';
}
