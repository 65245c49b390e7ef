/**
 * A set of metric families scraped together: each family's `collect` runs
 * (in registration order, one after the other), then every family is
 * written in the text exposition format.
 */
import { PROMETHEUS_CONTENT_TYPE } from './exposition.ts';
import type { Metric, MetricRegistrar } from './metric.ts';

export class MetricsRegistry implements MetricRegistrar {
  readonly contentType = PROMETHEUS_CONTENT_TYPE;
  readonly #metrics = new Map<string, Metric>();

  register(metric: Metric): void {
    if (this.#metrics.has(metric.name)) throw new Error(`A metric named ${metric.name} is already registered`);
    this.#metrics.set(metric.name, metric);
  }

  getSingleMetric(name: string): Metric | undefined {
    return this.#metrics.get(name);
  }

  removeSingleMetric(name: string): void {
    this.#metrics.delete(name);
  }

  /** The whole exposition, as scraped. */
  async metrics(): Promise<string> {
    for (const metric of this.#metrics.values()) await metric.collect();
    let out = '';
    for (const metric of this.#metrics.values()) out += metric.render();
    return out;
  }

  /** One family as scraped (tests). */
  async getSingleMetricAsString(name: string): Promise<string> {
    const metric = this.#metrics.get(name);
    if (metric === undefined) throw new Error(`No metric named ${name}`);
    await metric.collect();
    return metric.render();
  }
}
