/**
 * SVG charts with vega-lite compiled to vega and rendered headless
 * (`view.toSVG()`, no browser or canvas): latency percentile curves per
 * system, and freshness lag distributions.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { LatencySummary } from './load.ts';

async function render(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/**
 * The HDR-style percentile plot: x = "1 in N" (percentile on a log scale,
 * 50 % … 99.99 %), y = latency. One line per system.
 */
export function percentileChart(title: string, series: Readonly<Record<string, LatencySummary>>, unit: 'µs' | 'ms'): Promise<string> {
  const values: Array<{ system: string; percentile: number; inverse: number; value: number }> = [];
  for (const [system, summary] of Object.entries(series)) {
    for (const [p, us] of summary.curve) {
      if (p < 50 || p >= 100) continue;
      values.push({ system, percentile: p, inverse: 1 / (1 - p / 100), value: unit === 'ms' ? us / 1000 : us });
    }
  }
  return render({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 560,
    height: 300,
    background: 'white',
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'inverse',
        type: 'quantitative',
        scale: { type: 'log' },
        title: 'percentile (log scale: 2 = p50, 10 = p90, 100 = p99, 1000 = p99.9)',
      },
      y: { field: 'value', type: 'quantitative', scale: { type: 'log' }, title: `latency (${unit}, log)` },
      color: { field: 'system', type: 'nominal', legend: { orient: 'bottom', columns: 2, labelLimit: 320 } },
      tooltip: [{ field: 'system' }, { field: 'percentile' }, { field: 'value' }],
    },
  } as TopLevelSpec);
}

/** Bars of p50/p90/p99/max per scenario (ms), with the target as a rule. */
export function lagChart(title: string, series: Readonly<Record<string, { summary: LatencySummary; targetMs: number }>>): Promise<string> {
  const values: Array<{ series: string; stat: string; ms: number; order: number }> = [];
  const rules: Array<{ series: string; ms: number }> = [];
  for (const [name, { summary, targetMs }] of Object.entries(series)) {
    const stats: Array<[string, number]> = [
      ['p50', summary.p50],
      ['p90', summary.p90],
      ['p99', summary.p99],
      ['max', summary.max],
    ];
    stats.forEach(([stat, us], order) => values.push({ series: name, stat, ms: us / 1000, order }));
    rules.push({ series: name, ms: targetMs });
  }
  return render({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    background: 'white',
    data: { values },
    facet: { field: 'series', type: 'nominal', title: null },
    columns: 3,
    spec: {
      width: 170,
      height: 200,
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'stat', type: 'nominal', sort: ['p50', 'p90', 'p99', 'max'], title: null },
            y: { field: 'ms', type: 'quantitative', title: 'lag (ms) from the server ack' },
            color: { field: 'stat', type: 'nominal', legend: null, sort: ['p50', 'p90', 'p99', 'max'] },
          },
        },
        {
          mark: { type: 'text', dy: -6 },
          encoding: {
            x: { field: 'stat', type: 'nominal', sort: ['p50', 'p90', 'p99', 'max'] },
            y: { field: 'ms', type: 'quantitative' },
            text: { field: 'ms', type: 'quantitative', format: '.1f' },
          },
        },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  } as TopLevelSpec);
}
