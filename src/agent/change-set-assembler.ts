/**
 * Sits between the watch client and the event applier and turns the members
 * of a change set back into one unit. The server sends a set as consecutive
 * revisions, each item event stamped with `setRevision` (the set's last
 * revision); this buffers the members until the event at `setRevision`
 * arrives and hands the whole set to the applier as one batch, so no read
 * and no rendered file ever sees some members applied and others not.
 *
 * A stream whose prefixes cover only part of a set never receives the
 * member at `setRevision`; the server then sends a heartbeat at that revision
 * (and any later event proves the set over too), which completes the batch.
 * Buffered members are dropped when the stream is lost: the applied revision
 * did not move past them, so the resumed stream sends them again.
 */
import type { WatchEvent } from '../shared/watch-proto.ts';

/** Members buffered before a set is applied anyway (the server bounds sets well below this). */
export const MAX_BUFFERED_MEMBERS = 1_000;

export interface ChangeSetAssemblerOptions {
  /** One event outside any set. */
  readonly apply: (event: WatchEvent) => void;
  /** Every member of one set, in revision order. */
  readonly applyBatch: (events: readonly WatchEvent[]) => void;
}

const setRevisionOf = (event: WatchEvent): number => (event.type === 'itemChanged' || event.type === 'itemDeleted' ? (event.setRevision ?? 0) : 0);

export class ChangeSetAssembler {
  readonly #o: ChangeSetAssemblerOptions;
  #members: WatchEvent[] = [];
  #setRevision = 0;

  constructor(options: ChangeSetAssemblerOptions) {
    this.#o = options;
  }

  /** Members waiting for the rest of their set (tests, metrics). */
  get buffered(): number {
    return this.#members.length;
  }

  offer(event: WatchEvent): void {
    if (event.type === 'resyncRequired') {
      // Everything under the prefixes is dropped and refetched: a half-received set is moot.
      this.reset();
      this.#o.apply(event);
      return;
    }
    const setRevision = setRevisionOf(event);
    // Any event at or past the set's revision that is not its own last member, or one from another
    // set, proves the buffered set complete for this stream.
    const sameSet = setRevision === this.#setRevision && event.revision <= setRevision;
    if (this.#members.length > 0 && !sameSet && (event.revision >= this.#setRevision || setRevision !== 0)) this.#flush();
    if (setRevision === 0 || setRevision < event.revision) {
      this.#o.apply(event);
      return;
    }
    this.#setRevision = setRevision;
    this.#members.push(event);
    if (event.revision === setRevision || this.#members.length >= MAX_BUFFERED_MEMBERS) this.#flush();
  }

  /** The stream was lost: forget a half-received set (it will be sent again). */
  reset(): void {
    this.#members = [];
    this.#setRevision = 0;
  }

  #flush(): void {
    const members = this.#members;
    this.reset();
    if (members.length === 1) this.#o.apply(members[0] as WatchEvent);
    else if (members.length > 1) this.#o.applyBatch(members);
  }
}
