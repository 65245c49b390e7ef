/**
 * The report: `<stamp>.json` (every figure per repetition, latency and lag
 * summaries as percentiles, machine facts, versions, commit) and `<stamp>.md`
 * (a table per scenario: median, spread over the repetitions, ratio to each
 * reference, targets passed or missed), plus the SVG charts next to them.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fmt, max, median, min, spreadPct } from './stats.ts';
import type { Row, ScenarioResult } from './types.ts';

export interface Machine {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly loadAverage: readonly number[];
  readonly pinning: string;
}

export interface Report {
  readonly schema: 1;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly profile: string;
  readonly commit: string;
  readonly dirty: boolean;
  readonly machine: Machine;
  readonly versions: Readonly<Record<string, string>>;
  readonly scenarios: readonly ScenarioResult[];
  readonly charts: readonly string[];
  readonly profileFile?: string;
  readonly profileTop?: ReadonlyArray<{ fn: string; selfPct: number }>;
  readonly caveats: readonly string[];
}

function cell(n: number, unit: string): string {
  return unit === '' ? fmt(n) : `${fmt(n)} ${unit}`;
}

/** "0.72× bare node:http (socket)" for each reference with the same metric. */
function ratios(row: Row, rows: readonly Row[]): string {
  if (row.reference) return 'reference';
  const refs = rows.filter((r) => r.reference && r.metric === row.metric);
  if (refs.length === 0) return '';
  return refs
    .map((ref) => {
      const r = median(row.values) / median(ref.values);
      return `${Number.isFinite(r) ? r.toFixed(2) : '–'}× ${ref.system}`;
    })
    .join('<br>');
}

export function renderMarkdown(report: Report): string {
  const out: string[] = [];
  const passCount = report.scenarios.flatMap((s) => s.targets).filter((t) => t.pass === true).length;
  const missCount = report.scenarios.flatMap((s) => s.targets).filter((t) => t.pass === false).length;
  const notRun = report.scenarios.filter((s) => s.status !== 'ok');
  out.push(`# config-sidecar benchmark — ${report.startedAt}`);
  out.push('');
  out.push(`Profile **${report.profile}**, commit \`${report.commit.slice(0, 12)}\`${report.dirty ? ' (the shared work tree had uncommitted changes)' : ''}, ${report.machine.cores} cores (${report.machine.cpuModel}), ${report.machine.memoryGiB} GiB, Linux ${report.machine.kernel}, Node ${report.versions.node ?? ''}.`);
  out.push('');
  out.push(`**${report.machine.pinning}**`);
  out.push('');
  for (const c of report.caveats) out.push(`> ${c}`);
  if (report.caveats.length) out.push('');
  out.push(`Targets: **${passCount} met, ${missCount} missed**${notRun.length ? `, ${notRun.length} scenario(s) not run or failed` : ''}. Load average at start: ${report.machine.loadAverage.map((l) => l.toFixed(2)).join(' / ')}.`);
  out.push('');
  out.push('| scenario | status | target | measured | result |');
  out.push('| --- | --- | --- | --- | --- |');
  for (const s of report.scenarios) {
    if (s.status !== 'ok') {
      out.push(`| [${s.title}](#${s.id}) | ${s.status} | – | ${escape(s.reason ?? '')} | not run |`);
      continue;
    }
    for (const t of s.targets) out.push(`| [${s.title}](#${s.id}) | ok | ${escape(t.target)} | ${escape(t.measured)} | ${t.pass === null ? 'n/a' : t.pass ? 'PASS' : '**MISS**'} |`);
  }
  out.push('');
  out.push('Each table gives the median over the repetitions, the range (min–max) and the spread ((max − min) / median); ratios divide the medians by each reference measured in the same run. The saturation targets (cached reads, conditional read, cost) are paired instead: after warm-up runs of each until its own threads settle (not kept), the agent and bare node:http take turns in ABBA order, each pair of adjacent runs gives one ratio (the "… per pair" rows, unit ×), and a target reads "median× (min–max over n pairs)" of those ratios.');
  out.push('');
  for (const s of report.scenarios) {
    out.push(`<a id="${s.id}"></a>`);
    out.push(`## ${s.title} (\`${s.id}\`)`);
    out.push('');
    if (s.status !== 'ok') {
      out.push(`**${s.status === 'not-run' ? 'Not run' : 'Failed'}:** ${s.reason ?? ''}`);
      out.push('');
      continue;
    }
    out.push(`${s.setup}. ${s.seconds.toFixed(0)} s.`);
    out.push('');
    out.push('| system | metric | median | range | spread | reps | ratio |');
    out.push('| --- | --- | --- | --- | --- | --- | --- |');
    for (const row of s.rows) {
      const v = row.values;
      out.push(
        `| ${escape(row.system)} | ${escape(row.metric)} | ${cell(median(v), row.unit)} | ${fmt(min(v))}–${fmt(max(v))} | ${v.length > 1 ? `${fmt(spreadPct(v), 2)} %` : '–'} | ${v.length} | ${ratios(row, s.rows)} |`,
      );
    }
    out.push('');
    for (const t of s.targets) out.push(`- ${t.pass === null ? 'n/a' : t.pass ? 'PASS' : '**MISS**'}: ${escape(t.target)} — measured ${escape(t.measured)}`);
    for (const n of s.notes) out.push(`- ${escape(n)}`);
    for (const row of s.rows.filter((r) => r.note)) out.push(`- ${escape(row.system)}: ${escape(row.note ?? '')}`);
    out.push('');
  }
  if (report.charts.length) {
    out.push('## Charts');
    out.push('');
    for (const c of report.charts) out.push(`![${c}](${c})`);
    out.push('');
  }
  if (report.profileFile) {
    out.push('## Where the agent\'s time goes');
    out.push('');
    out.push(`A target was missed, so the agent was profiled (\`--cpu-prof\`) under the cached-read load: \`${report.profileFile}\` (open it in Chrome DevTools → Performance, or speedscope). Top functions by self time (share of the non-idle samples):`);
    out.push('');
    out.push('| self % | function |');
    out.push('| --- | --- |');
    for (const f of report.profileTop ?? []) out.push(`| ${f.selfPct.toFixed(1)} | ${escape(f.fn)} |`);
    out.push('');
  }
  out.push('## Versions');
  out.push('');
  for (const [k, v] of Object.entries(report.versions)) out.push(`- ${k}: ${escape(v)}`);
  out.push('');
  return out.join('\n');
}

function escape(s: string): string {
  return s.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

export async function writeReport(dir: string, stamp: string, report: Report): Promise<{ json: string; md: string }> {
  const json = join(dir, `${stamp}.json`);
  const md = join(dir, `${stamp}.md`);
  await writeFile(json, `${JSON.stringify(report, null, 1)}\n`);
  await writeFile(md, renderMarkdown(report));
  return { json, md };
}
