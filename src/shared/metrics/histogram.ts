/**
 * A Prometheus histogram: per label set, a count per bucket (written
 * cumulatively, each `le` counting every observation at or below it, the
 * last `le="+Inf"` equal to `_count`), the sum and the count.
 */
import { formatValue } from './exposition.ts';
import { LabelledMetric, type Labels, type MetricOptions, type Series } from './metric.ts';

interface HistogramState {
  /** Observations per bucket, not cumulative; the last slot is above the highest bound. */
  readonly counts: number[];
  sum: number;
  count: number;
}

export interface HistogramOptions<L extends string> extends MetricOptions<L, Histogram<L>> {
  /** Upper bounds, strictly increasing and finite; `+Inf` is implied. */
  readonly buckets: readonly number[];
}

export class Histogram<L extends string = never> extends LabelledMetric<L, HistogramState> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  /** The `le` label of each bucket, `+Inf` last, spelled once. */
  readonly #bounds: readonly string[];

  constructor(options: HistogramOptions<L>) {
    super(options as MetricOptions<L, never>, ['le']);
    const b = options.buckets;
    if (b.length === 0 || b.some((x, i) => !Number.isFinite(x) || (i > 0 && x <= (b[i - 1] ?? -Infinity)))) {
      throw new TypeError(`${options.name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = [...b];
    this.#bounds = [...b.map(formatValue), '+Inf'];
  }

  observe(value: number): void;
  observe(labels: Labels<L>, value: number): void;
  observe(labelsOrValue: Labels<L> | number, value?: number): void {
    const v = typeof labelsOrValue === 'number' ? labelsOrValue : (value ?? NaN);
    if (Number.isNaN(v)) throw new TypeError(`${this.name}: observed NaN`);
    const state = this.seriesFor(typeof labelsOrValue === 'number' ? undefined : labelsOrValue).state;
    let i = 0;
    while (i < this.buckets.length && v > (this.buckets[i] ?? Infinity)) i++;
    state.counts[i] = (state.counts[i] ?? 0) + 1;
    state.sum += v;
    state.count += 1;
  }

  protected initial(): HistogramState {
    return { counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
  }

  protected renderSeries(labels: string, series: Series<HistogramState>): string {
    // `le` goes after the series' own labels: `{a="x",le="0.1"}` or `{le="0.1"}`.
    const open = labels === '' ? '{' : `${labels.slice(0, -1)},`;
    let out = '';
    let cumulative = 0;
    this.#bounds.forEach((bound, i) => {
      cumulative += series.state.counts[i] ?? 0;
      out += `${this.name}_bucket${open}le="${bound}"} ${cumulative}\n`;
    });
    return `${out}${this.name}_sum${labels} ${formatValue(series.state.sum)}\n${this.name}_count${labels} ${series.state.count}\n`;
  }
}
