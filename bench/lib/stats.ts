/** Small statistics over repetitions. */
export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

export function min(values: readonly number[]): number {
  return Math.min(...values.filter((x) => Number.isFinite(x)));
}

export function max(values: readonly number[]): number {
  return Math.max(...values.filter((x) => Number.isFinite(x)));
}

/** (max − min) / median, as a percentage: how much the repetitions disagree. */
export function spreadPct(values: readonly number[]): number {
  const m = median(values);
  return m === 0 || !Number.isFinite(m) ? Number.NaN : ((max(values) - min(values)) / Math.abs(m)) * 100;
}

export function percentile(values: readonly number[], p: number): number {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const idx = Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1));
  return v[idx] as number;
}

export function fmt(n: number, digits = 3): string {
  if (!Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  return Number(n.toPrecision(digits)).toString();
}

/**
 * Whether the subject runs first in pair `pair` of an ABBA sequence (subject,
 * reference, reference, subject, …): alternating the order makes a drift
 * that is linear over the pairs raise one order's ratios as much as it lowers
 * the other's, so their median stays put.
 */
export function subjectFirst(pair: number): boolean {
  return pair % 2 === 0;
}

/**
 * subject[i] / reference[i] for each pair of runs measured next to each
 * other. A pair whose reference has no positive figure gives no ratio (there
 * is nothing to divide by); a subject figure of 0 (a run in which the agent
 * answered nothing) is a ratio of 0, so such runs count against a target
 * instead of leaving it to the pairs that did answer. A subject with no
 * figure at all (NaN: CPU per request of a run without requests) gives none.
 */
export function pairedRatios(subject: readonly number[], reference: readonly number[]): number[] {
  if (subject.length !== reference.length) throw new Error(`paired runs differ in count: ${subject.length} subject, ${reference.length} reference`);
  const out: number[] = [];
  subject.forEach((s, i) => {
    const r = reference[i] as number;
    if (Number.isFinite(s) && Number.isFinite(r) && s >= 0 && r > 0) out.push(s / r);
  });
  return out;
}

export interface RatioSummary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly pairs: number;
}

/** Median and range of per-pair ratios: the figure a target is judged by, with the spread it has. */
export function summariseRatios(ratios: readonly number[]): RatioSummary {
  const finite = ratios.filter((x) => Number.isFinite(x));
  return finite.length === 0
    ? { median: Number.NaN, min: Number.NaN, max: Number.NaN, pairs: 0 }
    : { median: median(finite), min: min(finite), max: max(finite), pairs: finite.length };
}

/**
 * Σ totals / Σ counts over runs (e.g. CPU seconds over requests): the
 * figure of all runs taken as one, so work that lands in a few runs only
 * (a periodic major GC) is spread over all of them instead of being left
 * out with those runs, as a median of per-run figures does.
 */
export function pooled(totals: readonly number[], counts: readonly number[]): number {
  if (totals.length !== counts.length) throw new Error(`pooled runs differ in count: ${totals.length} totals, ${counts.length} counts`);
  let total = 0;
  let count = 0;
  totals.forEach((t, i) => {
    const c = counts[i] as number;
    if (Number.isFinite(t) && Number.isFinite(c) && c > 0) {
      total += t;
      count += c;
    }
  });
  return count > 0 ? total / count : Number.NaN;
}

/** "1.21× (1.12–1.30 over 8 pairs)", with "; all runs pooled 1.27×" when a pooled ratio is given. */
export function formatRatio(s: RatioSummary, pooledRatio?: number): string {
  if (s.pairs === 0) return '–';
  const all = pooledRatio !== undefined && Number.isFinite(pooledRatio) ? `; all runs pooled ${pooledRatio.toFixed(2)}×` : '';
  return `${s.median.toFixed(2)}× (${s.min.toFixed(2)}–${s.max.toFixed(2)} over ${s.pairs} pair${s.pairs === 1 ? '' : 's'}${all})`;
}
