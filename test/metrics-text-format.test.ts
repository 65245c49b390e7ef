/**
 * The agent's metrics module (src/shared/metrics/) as Prometheus reads it:
 * escaping of HELP text and label values, histogram buckets (cumulative,
 * `+Inf` equal to `_count`, an observation on a bound counted in that
 * bucket), label sets, values, collection before a scrape, and the errors a
 * misuse gets. Every exposition is read back with the strict parser.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerformanceObserver } from 'node:perf_hooks';
import { Counter } from '../src/shared/metrics/counter.ts';
import { Gauge } from '../src/shared/metrics/gauge.ts';
import { Histogram } from '../src/shared/metrics/histogram.ts';
import { registerNodeMetrics } from '../src/shared/metrics/node-metrics.ts';
import { MetricsRegistry } from '../src/shared/metrics/registry.ts';
import { escapeHelp, escapeLabelValue, formatValue, PROMETHEUS_CONTENT_TYPE } from '../src/shared/metrics/exposition.ts';
import { parsePrometheusText } from './helpers/prom-text.ts';

test('HELP text and label values are escaped as the format says, and read back unchanged', async () => {
  assert.equal(escapeHelp('a \\ b\nc "q"'), 'a \\\\ b\\nc "q"');
  assert.equal(escapeLabelValue('a \\ b\nc "q"'), 'a \\\\ b\\nc \\"q\\"');
  const registry = new MetricsRegistry();
  const awkward = 'C:\\dir\\file "quoted"\nsecond line, {braces}=';
  const c = new Counter<'path'>({ name: 'x_total', help: 'Help with a \\ backslash\nand a "quote".', labelNames: ['path'], registers: [registry] });
  c.inc({ path: awkward });
  const text = await registry.metrics();
  assert.match(text, /^# HELP x_total Help with a \\\\ backslash\\nand a "quote"\.$/m);
  const [family] = parsePrometheusText(text);
  assert.equal(family?.help, 'Help with a \\ backslash\nand a "quote".');
  assert.deepEqual(family?.samples, [{ name: 'x_total', labels: { path: awkward }, value: 1 }]);
  assert.equal(registry.contentType, PROMETHEUS_CONTENT_TYPE);
});

test('a histogram writes cumulative buckets per label set, le after the labels, +Inf equal to _count, then _sum and _count', async () => {
  const registry = new MetricsRegistry();
  const h = new Histogram<'route'>({ name: 'lat_seconds', help: 'Latency.', labelNames: ['route'], buckets: [1, 5, 10], registers: [registry] });
  for (const v of [0.5, 1, 3, 20, 7]) h.observe({ route: 'a' }, v);
  h.observe({ route: 'b' }, 0.25);
  const text = await registry.metrics();
  assert.equal(
    text,
    [
      '# HELP lat_seconds Latency.',
      '# TYPE lat_seconds histogram',
      'lat_seconds_bucket{route="a",le="1"} 2',
      'lat_seconds_bucket{route="a",le="5"} 3',
      'lat_seconds_bucket{route="a",le="10"} 4',
      'lat_seconds_bucket{route="a",le="+Inf"} 5',
      'lat_seconds_sum{route="a"} 31.5',
      'lat_seconds_count{route="a"} 5',
      'lat_seconds_bucket{route="b",le="1"} 1',
      'lat_seconds_bucket{route="b",le="5"} 1',
      'lat_seconds_bucket{route="b",le="10"} 1',
      'lat_seconds_bucket{route="b",le="+Inf"} 1',
      'lat_seconds_sum{route="b"} 0.25',
      'lat_seconds_count{route="b"} 1',
      '',
    ].join('\n'),
  );
  assert.equal(parsePrometheusText(text)[0]?.samples.length, 12);
});

test('a histogram without labels is present at zero before its first observation', async () => {
  const registry = new MetricsRegistry();
  new Histogram({ name: 'apply_seconds', help: 'Apply.', buckets: [0.001], registers: [registry] });
  const text = await registry.metrics();
  assert.match(text, /^apply_seconds_bucket\{le="0\.001"\} 0$/m);
  assert.match(text, /^apply_seconds_bucket\{le="\+Inf"\} 0$/m);
  assert.match(text, /^apply_seconds_count 0$/m);
  parsePrometheusText(text);
});

test('counters and gauges: label-less ones start at 0, labelled series appear when first used, labels in declared order', async () => {
  const registry = new MetricsRegistry();
  const plain = new Counter({ name: 'plain_total', help: 'p', registers: [registry] });
  const byCode = new Counter<'listener' | 'status'>({ name: 'req_total', help: 'r', labelNames: ['listener', 'status'], registers: [registry] });
  const g = new Gauge<'file'>({ name: 'healthy', help: 'h', labelNames: ['file'], registers: [registry] });
  assert.doesNotMatch(await registry.metrics(), /^req_total\{/m);
  assert.match(await registry.metrics(), /^plain_total 0$/m);
  plain.inc();
  plain.inc(2.5);
  byCode.inc({ status: 200, listener: 'socket' });
  byCode.inc({ listener: 'tcp', status: 401 }, 0);
  g.set({ file: 'a' }, 1);
  g.set({ file: 'b' }, 1);
  g.dec({ file: 'b' });
  g.remove({ file: 'a' });
  const text = await registry.metrics();
  assert.match(text, /^plain_total 3\.5$/m);
  assert.match(text, /^req_total\{listener="socket",status="200"\} 1$/m);
  assert.match(text, /^req_total\{listener="tcp",status="401"\} 0$/m);
  assert.match(text, /^healthy\{file="b"\} 0$/m);
  assert.doesNotMatch(text, /file="a"/);
  assert.deepEqual(byCode.get().values, [
    { labels: { listener: 'socket', status: '200' }, value: 1 },
    { labels: { listener: 'tcp', status: '401' }, value: 0 },
  ]);
  parsePrometheusText(text);
});

test('values Prometheus spells specially: NaN, +Inf, -Inf and exponents', async () => {
  assert.deepEqual([NaN, Infinity, -Infinity, 5.11e-7, 1e21, -0.5].map(formatValue), ['NaN', '+Inf', '-Inf', '5.11e-7', '1e+21', '-0.5']);
  const registry = new MetricsRegistry();
  const g = new Gauge({ name: 'odd', help: 'o', registers: [registry] });
  g.set(NaN);
  assert.ok(Number.isNaN(parsePrometheusText(await registry.metrics())[0]?.samples[0]?.value));
});

test('collect runs before each scrape (awaited when async), with the metric as this', async () => {
  const registry = new MetricsRegistry();
  let pending = 3;
  new Counter({
    name: 'hits_total',
    help: 'Batched.',
    registers: [registry],
    async collect() {
      await new Promise((r) => setImmediate(r));
      this.inc(pending);
      pending = 0;
    },
  });
  assert.match(await registry.metrics(), /^hits_total 3$/m);
  pending = 2;
  assert.match(await registry.getSingleMetricAsString('hits_total'), /^hits_total 5$/m);
});

test('misuse is a TypeError naming the metric: bad names, a missing or undeclared label, a counter going down, unordered buckets, a name registered twice', () => {
  const registry = new MetricsRegistry();
  const c = new Counter<'reason'>({ name: 'refused_total', help: 'r', labelNames: ['reason'], registers: [registry] });
  assert.throws(() => new Counter({ name: 'bad-name', help: 'x' }), /Invalid metric name "bad-name"/);
  assert.throws(() => new Counter({ name: 'x', help: 'x', labelNames: ['__reserved'] }), /invalid label name "__reserved"/);
  assert.throws(() => new Histogram({ name: 'h', help: 'x', labelNames: ['le'], buckets: [1] }), /invalid label name "le"/);
  assert.throws(() => c.inc({} as { reason: string }), /refused_total: label reason is missing/);
  assert.throws(() => c.inc({ reason: 'x', other: 'y' } as { reason: string }), /refused_total: labels reason, other are not the declared reason/);
  assert.throws(() => c.inc({ reason: 'x' }, -1), /refused_total: a counter only goes up/);
  assert.throws(() => new Histogram({ name: 'h', help: 'x', buckets: [1, 1] }), /h: buckets must be finite and strictly increasing/);
  assert.throws(() => new Counter({ name: 'refused_total', help: 'again', registers: [registry] }), /A metric named refused_total is already registered/);
});

test('the process and Node.js families: parse strictly, GC observed by kind, heap spaces and version labelled', async () => {
  const registry = new MetricsRegistry();
  registerNodeMetrics(registry, 't_');
  // Garbage until a scavenge is delivered to an observer of the test's own (the module's was registered first, so it has it too).
  let seen = false;
  const observer = new PerformanceObserver(() => (seen = true));
  observer.observe({ entryTypes: ['gc'] });
  let keep: unknown[] = [];
  for (let round = 0; !seen && round < 1000; round++) {
    for (let i = 0; i < 10_000; i++) keep.push({ i });
    keep = [];
    await new Promise((r) => setImmediate(r));
  }
  observer.disconnect();
  assert.ok(seen, 'a GC within 1000 rounds of garbage');
  const families = parsePrometheusText(await registry.metrics());
  const byName = new Map(families.map((f) => [f.name, f]));
  assert.equal(byName.get('t_process_cpu_seconds_total')?.type, 'counter');
  assert.ok((byName.get('t_process_resident_memory_bytes')?.samples[0]?.value ?? 0) > 0);
  assert.ok(byName.get('t_nodejs_heap_space_size_used_bytes')?.samples.some((s) => s.labels.space === 'old'));
  assert.deepEqual(byName.get('t_nodejs_version_info')?.samples[0]?.labels, {
    version: process.version,
    major: process.versions.node.split('.')[0],
    minor: process.versions.node.split('.')[1],
    patch: process.versions.node.split('.')[2],
  });
  assert.ok(byName.get('t_nodejs_gc_duration_seconds')?.samples.some((s) => s.labels.kind === 'minor' && s.name.endsWith('_count') && s.value > 0));
  assert.equal(keep.length, 0);
});
