/** A Prometheus gauge: a value per label set, set or moved either way. */
import { ScalarMetric, type Labels, type MetricOptions } from './metric.ts';

export class Gauge<L extends string = never> extends ScalarMetric<L> {
  readonly type = 'gauge';

  constructor(options: MetricOptions<L, Gauge<L>>) {
    super(options as MetricOptions<L, never>);
  }

  set(value: number): void;
  set(labels: Labels<L>, value: number): void;
  set(labelsOrValue: Labels<L> | number, value?: number): void {
    if (typeof labelsOrValue === 'number') this.seriesFor(undefined).state = labelsOrValue;
    else this.seriesFor(labelsOrValue).state = value ?? 0;
  }

  inc(value?: number): void;
  inc(labels: Labels<L>, value?: number): void;
  inc(labelsOrValue?: Labels<L> | number, value?: number): void {
    const labels = typeof labelsOrValue === 'object' ? labelsOrValue : undefined;
    this.seriesFor(labels).state += typeof labelsOrValue === 'number' ? labelsOrValue : (value ?? 1);
  }

  dec(value?: number): void;
  dec(labels: Labels<L>, value?: number): void;
  dec(labelsOrValue?: Labels<L> | number, value?: number): void {
    const labels = typeof labelsOrValue === 'object' ? labelsOrValue : undefined;
    this.seriesFor(labels).state -= typeof labelsOrValue === 'number' ? labelsOrValue : (value ?? 1);
  }
}
