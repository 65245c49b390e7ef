/** Counters the value cache reports; the agent wires them to Prometheus. */
export interface CacheObserver {
  hit(): void;
  miss(): void;
  coalesced(): void;
  stale(): void;
  eviction(reason: string): void;
  superseded(): void;
  upstreamFailure(code: string): void;
}

export const noopObserver: CacheObserver = {
  hit() {},
  miss() {},
  coalesced() {},
  stale() {},
  eviction() {},
  superseded() {},
  upstreamFailure() {},
};
