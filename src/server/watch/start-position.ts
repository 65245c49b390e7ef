/**
 * Where a Watch stream starts: a pure decision from the requested start and
 * one snapshot of the log read at the requested revision. A position that
 * cannot be resumed exactly (another store, a digest that does not match the
 * event stored at that revision, a revision in the future or compacted away)
 * is answered with a resync, never an error: the client drops what it learnt
 * and the stream continues live, so no client can retry a dead position
 * forever nor resume past events it never saw.
 */
import type { StartFrom } from '../../shared/watch-proto.ts';
import type { LogPage } from '../store/store.ts';

export type StartDecision =
  | { readonly kind: 'now' }
  /** Replay every event after `revision` (whose digest is `digest`). */
  | { readonly kind: 'replay'; readonly revision: number; readonly digest: string }
  | { readonly kind: 'resync'; readonly reason: string };

/** The revision a start asks the log to be read at (undefined: the head). */
export function startRevision(start: StartFrom): number | undefined {
  switch (start.kind) {
    case 'now':
      return undefined;
    case 'after':
      return start.position.revision;
    case 'legacy':
      return start.sinceRevision;
  }
}

/** `page` is the log read at `startRevision(start)`; unused for `now`. */
export function decideStart(start: StartFrom, page: LogPage): StartDecision {
  if (start.kind === 'now') return { kind: 'now' };
  const revision = start.kind === 'after' ? start.position.revision : start.sinceRevision;
  const name = start.kind === 'after' ? 'position' : 'since_revision';
  if (start.kind === 'after' && start.position.storeId !== '' && start.position.storeId !== page.storeId) {
    return { kind: 'resync', reason: `the ${name} is from another store (${start.position.storeId}; this store is ${page.storeId}): it was restored or reset` };
  }
  if (revision > page.revision) {
    return { kind: 'resync', reason: `${name} ${revision} is in the future (the current revision is ${page.revision}): the store was restored or lost commits` };
  }
  if (revision < page.compactedThrough || page.afterDigest === undefined) {
    return { kind: 'resync', reason: `${name} ${revision} is older than the retained log (oldest ${page.compactedThrough + 1})` };
  }
  // An empty digest on either side is a position from before digests existed (a v1.0 peer or an old event); the store id still counts.
  if (start.kind === 'after' && start.position.storeId !== '' && start.position.digest !== '' && page.afterDigest !== '' && start.position.digest !== page.afterDigest) {
    return { kind: 'resync', reason: `the event at revision ${revision} is not the one the client applied (digest mismatch): the log was rewritten since` };
  }
  return { kind: 'replay', revision, digest: page.afterDigest };
}
