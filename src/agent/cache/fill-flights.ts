/**
 * Fills in flight and the generations that supersede them. Every upstream (or
 * local, inline-layer) fill is a `Flight`; at most one per cache key is
 * current. An applied event supersedes the key's flight (the per-key
 * generation); a (re)connect from `now` or a resync supersedes every flight
 * and starts a new cache-wide generation, so a response that was in flight
 * when the stream could no longer vouch for it is never stored or handed out.
 */
export interface Flight<T> {
  readonly key: string;
  /** The cache-wide generation the fill started in. */
  readonly generation: number;
  readonly promise: Promise<T>;
  /**
   * Set when an event (or a new generation) landed while this fill was out.
   * Its result is used only when it is at least as new as every event that
   * superseded it (`supersededThrough`; a new generation makes it infinite):
   * a fill that waited for its own revision to be applied (applied-position.ts)
   * is then current, and a read under continuous writes converges.
   */
  superseded: boolean;
  supersededThrough: number;
  waiters: number;
}

export class FillFlights<T> {
  readonly #flights = new Map<string, Flight<T>>();
  /** Superseded fills still out whose result may yet be used: later events must reach them too. */
  readonly #detached = new Set<Flight<T>>();
  #generation = 0;

  /** The current cache-wide generation. */
  get generation(): number {
    return this.#generation;
  }

  get(key: string): Flight<T> | undefined {
    return this.#flights.get(key);
  }

  has(key: string): boolean {
    return this.#flights.has(key);
  }

  /** Registers a fill; `run` receives the flight so its continuation can check `superseded`. */
  start(key: string, run: (flight: Flight<T>) => Promise<T>): Flight<T> {
    this.supersede(key);
    const flight: Flight<T> = { key, generation: this.#generation, superseded: false, supersededThrough: 0, waiters: 0, promise: undefined as unknown as Promise<T> };
    this.#flights.set(key, flight);
    (flight as { promise: Promise<T> }).promise = run(flight);
    return flight;
  }

  /** The fill settled: it stops being the key's current flight. */
  settle(flight: Flight<T>): void {
    if (this.#flights.get(flight.key) === flight) this.#flights.delete(flight.key);
    this.#detached.delete(flight);
  }

  /** A settled fill's result may be used: not superseded, or at least as new as everything that superseded it. */
  usable(flight: Flight<T>, revision: number): boolean {
    return !flight.superseded || revision >= flight.supersededThrough;
  }

  /** Supersedes the key's flight (by an event at `revision`); returns it (for its waiter count). */
  supersede(key: string, revision = Number.POSITIVE_INFINITY): Flight<T> | undefined {
    for (const out of this.#detached) if (out.key === key) out.supersededThrough = Math.max(out.supersededThrough, revision);
    const flight = this.#flights.get(key);
    if (!flight) return undefined;
    flight.superseded = true;
    flight.supersededThrough = Math.max(flight.supersededThrough, revision);
    this.#flights.delete(key);
    this.#detached.add(flight);
    return flight;
  }

  #supersedeEverything(): string[] {
    const keys = [...this.#flights.keys()];
    for (const flight of [...this.#flights.values(), ...this.#detached]) {
      flight.superseded = true;
      flight.supersededThrough = Number.POSITIVE_INFINITY;
    }
    this.#flights.clear();
    this.#detached.clear();
    return keys;
  }

  /** Supersedes every flight (the generation stays); returns their keys. */
  supersedeFlights(): string[] {
    return this.#supersedeEverything();
  }

  /** Supersedes every flight and begins a new generation; returns the superseded flights' keys. */
  supersedeAll(): string[] {
    this.#generation += 1;
    return this.#supersedeEverything();
  }
}
