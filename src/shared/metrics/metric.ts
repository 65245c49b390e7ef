/**
 * What every metric family shares: a validated name, HELP and label names,
 * one series per distinct label set (created on first use; a family without
 * labels has its one series from the start, at zero), and an optional
 * `collect` hook run before each scrape with the metric as `this`.
 */
import { familyHeader, formatLabels, formatValue } from './exposition.ts';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Separates label values in a series key; a value cannot hold it unescaped without also being odd text. */
const KEY_SEPARATOR = '\u0000';

export type MetricType = 'counter' | 'gauge' | 'histogram';

/** A label set: every declared label name, each a string or number. */
export type Labels<L extends string> = Readonly<Record<L, string | number>>;

/** A family as a registry holds it. */
export interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  /** Refreshes values before a scrape (reads /proc, drains a batch); may be async. */
  collect(): void | Promise<void>;
  /** The family in the exposition format, ending with a line feed. */
  render(): string;
}

/** Where a metric registers itself (a registry). */
export interface MetricRegistrar {
  register(metric: Metric): void;
}

export interface MetricOptions<L extends string, M> {
  /** The family name, prefix included. */
  readonly name: string;
  readonly help: string;
  /** @default [] (one series, present from the start at zero) */
  readonly labelNames?: readonly L[];
  /** Registries to register with at construction. */
  readonly registers?: readonly MetricRegistrar[];
  /** Runs before each scrape, with the metric as `this`. */
  readonly collect?: (this: M) => void | Promise<void>;
}

export interface Series<S> {
  readonly values: readonly string[];
  state: S;
}

export abstract class LabelledMetric<L extends string, S> implements Metric {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly L[];
  abstract readonly type: MetricType;
  protected readonly series = new Map<string, Series<S>>();
  readonly #collect: (() => void | Promise<void>) | undefined;

  constructor(options: MetricOptions<L, never>, reservedLabels: readonly string[] = []) {
    if (!METRIC_NAME.test(options.name)) throw new TypeError(`Invalid metric name ${JSON.stringify(options.name)}`);
    const labelNames = options.labelNames ?? [];
    for (const label of labelNames) {
      if (!LABEL_NAME.test(label) || label.startsWith('__') || reservedLabels.includes(label)) throw new TypeError(`${options.name}: invalid label name ${JSON.stringify(label)}`);
    }
    if (new Set(labelNames).size !== labelNames.length) throw new TypeError(`${options.name}: a label name is declared twice`);
    this.name = options.name;
    this.help = options.help;
    this.labelNames = labelNames;
    const collect = options.collect as ((this: this) => void | Promise<void>) | undefined;
    this.#collect = collect && (() => collect.call(this));
    for (const registry of options.registers ?? []) registry.register(this);
  }

  collect(): void | Promise<void> {
    return this.#collect?.();
  }

  /** Forgets every labelled series (a family without labels goes back to zero). */
  reset(): void {
    this.series.clear();
  }

  /** Forgets one labelled series. */
  remove(labels: Labels<L>): void {
    this.series.delete(this.key(labels));
  }

  protected abstract initial(): S;

  protected abstract renderSeries(labels: string, series: Series<S>): string;

  protected seriesFor(labels: Labels<L> | undefined): Series<S> {
    const key = this.key(labels);
    let series = this.series.get(key);
    if (series === undefined) {
      series = { values: this.labelNames.map((n) => String((labels as Labels<L>)[n])), state: this.initial() };
      this.series.set(key, series);
    }
    return series;
  }

  render(): string {
    if (this.labelNames.length === 0) this.seriesFor(undefined);
    let out = familyHeader(this.name, this.help, this.type);
    for (const series of this.series.values()) out += this.renderSeries(formatLabels(this.labelNames, series.values), series);
    return out;
  }

  /** The series key; a missing or undeclared label is a programming error, thrown naming both. */
  private key(labels: Labels<L> | undefined): string {
    const names = this.labelNames;
    const given = labels === undefined ? 0 : Object.keys(labels).length;
    if (names.length === 0) {
      if (given > 0) throw new TypeError(`${this.name} has no labels; got ${Object.keys(labels ?? {}).join(', ')}`);
      return '';
    }
    let key = '';
    for (const name of names) {
      const value = labels?.[name];
      if (value === undefined) throw new TypeError(`${this.name}: label ${name} is missing`);
      key += String(value) + KEY_SEPARATOR;
    }
    if (given !== names.length) throw new TypeError(`${this.name}: labels ${Object.keys(labels ?? {}).join(', ')} are not the declared ${names.join(', ')}`);
    return key;
  }
}

/** A family whose series each hold one number (counters and gauges), readable for tests and collectors. */
export abstract class ScalarMetric<L extends string> extends LabelledMetric<L, number> {
  protected initial(): number {
    return 0;
  }

  protected renderSeries(labels: string, series: Series<number>): string {
    return `${this.name}${labels} ${formatValue(series.state)}\n`;
  }

  /** Every series with its labels and value (after `collect()` where a collector feeds it). */
  get(): { values: Array<{ labels: Record<string, string>; value: number }> } {
    if (this.labelNames.length === 0) this.seriesFor(undefined);
    return {
      values: [...this.series.values()].map((s) => ({ labels: Object.fromEntries(this.labelNames.map((n, i) => [n, s.values[i] ?? ''])), value: s.state })),
    };
  }
}
