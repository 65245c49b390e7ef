/**
 * Which staged rollouts' candidates this agent serves, per item, for its
 * fleet report: the server answers a canary's fetch with the candidate
 * marked by its rollout; any later event for the item (a new canary set, a
 * rollback, the completion) drops the mark until a fetch brings it back, so
 * the report never claims a candidate the agent stopped serving.
 */
import { itemKey, type ItemRef } from '../shared/paths.ts';
import type { RolloutVersion } from '../shared/fleet-proto.ts';

/** Bound on tracked items (the report carries at most REPORT_MAX_ROLLOUTS). */
export const TRACKED_ROLLOUT_ITEMS_MAX = 256;

export class RolloutTracker {
  readonly #served = new Map<string, RolloutVersion>();
  readonly #onChange: () => void;

  /** `onChange` runs when what the agent serves changed (report it). */
  constructor(onChange: () => void) {
    this.#onChange = onChange;
  }

  /** A fetch of `ref` returned this rollout's candidate (or, undefined, the stable version). */
  fetched(ref: ItemRef, rollout: string | undefined, version: number): void {
    const item = itemKey(ref);
    const held = this.#served.get(item);
    if (rollout === undefined) {
      this.forget(ref);
      return;
    }
    if (held?.rollout === rollout && held.version === version) return;
    if (!held && this.#served.size >= TRACKED_ROLLOUT_ITEMS_MAX) return;
    this.#served.set(item, { rollout, item, version });
    this.#onChange();
  }

  /**
   * A value restored from the warm-restart snapshot is this rollout's
   * candidate: marked as a fetch would, without a change to report (the
   * agent has not reported yet; it is still starting).
   */
  restored(mark: RolloutVersion): void {
    if (this.#served.size >= TRACKED_ROLLOUT_ITEMS_MAX) return;
    this.#served.set(mark.item, { rollout: mark.rollout, item: mark.item, version: mark.version });
  }

  /** An event changed the item: what it serves is unknown until the next fetch. */
  forget(ref: ItemRef): void {
    if (this.#served.delete(itemKey(ref))) this.#onChange();
  }

  list(): RolloutVersion[] {
    return [...this.#served.values()];
  }
}
