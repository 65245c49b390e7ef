/** A Prometheus counter: a value per label set that only goes up. */
import { ScalarMetric, type Labels, type MetricOptions } from './metric.ts';

export class Counter<L extends string = never> extends ScalarMetric<L> {
  readonly type = 'counter';

  constructor(options: MetricOptions<L, Counter<L>>) {
    super(options as MetricOptions<L, never>);
  }

  /** Adds `value` (default 1; 0 makes the series show) to the series of `labels`. */
  inc(value?: number): void;
  inc(labels: Labels<L>, value?: number): void;
  inc(labelsOrValue?: Labels<L> | number, value?: number): void {
    const labels = typeof labelsOrValue === 'object' ? labelsOrValue : undefined;
    const by = typeof labelsOrValue === 'number' ? labelsOrValue : (value ?? 1);
    if (!(by >= 0)) throw new TypeError(`${this.name}: a counter only goes up (inc by ${by})`);
    this.seriesFor(labels).state += by;
  }
}
