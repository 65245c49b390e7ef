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
