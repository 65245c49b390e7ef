/**
 * What a `--config` reload costs the running agent (docs/FOOTPRINT-LOG.md,
 * "Footprint", r28): the serving process does not hold the settings schema
 * (zod) or `yaml`; a reload runs them in a short-lived child process
 * (src/agent/config-validator.ts; before r28 the first reload imported both
 * into the agent). For each repetition a fresh agent (the bin as installed,
 * `dist/cli/main.js`, with a config file) is read idle, then its config file
 * is edited; the reading after the `config reloaded` log line (and
 * `--settle-ms` for the heap trimmer) minus the idle one is the reload's
 * cost, with the reload's wall time (edit → log line, which includes
 * chokidar's notice and the file's stability wait). `--reloads N` edits the
 * file N times per agent (the table has the first and the last). While a
 * reload runs, the agent's child processes are sampled every 5 ms: the
 * largest child VmRSS / RssAnon seen is the reload's transient peak next to
 * the agent (a child that lives under 5 ms can be missed).
 *
 * `--agent-cli NAME=PATH` (repeatable) runs another build's bin
 * (`dist/cli/main.js`); the builds take turns, one agent each per rep.
 * `--files` gives the config a `files:` entry (one seeded item rendered as
 * JSON), as an injected pod's ConfigMap usually has (before f28 such an
 * agent loaded zod at start for the files spec; now the spec is validated
 * with the settings, before the re-exec and in the reload's child).
 *
 *   npm run build && taskset -c 1 node bench/reload-cost.ts --reps 3 \
 *     --agent-cli=base=/work/wt/base/dist/cli/main.js --agent-cli=mine=$PWD/dist/cli/main.js
 */
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Context, ITEMS_NS } from './lib/context.ts';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { memoryStatus, stopAllChildren, SUT_CORE, type MemoryStatus } from './lib/proc.ts';
import { DIST_CLI, keyName, startAgent, tempDir, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';
import { PROFILES } from './lib/types.ts';

const USAGE = 'Usage: npm run build && node bench/reload-cost.ts [--reps 3] [--reloads 2] [--settle-ms 3000] [--files] [--agent-cli=NAME=PATH …]';
const values = benchArgs(USAGE, {
  reps: { type: 'string', default: '3' },
  reloads: { type: 'string', default: '2' },
  'settle-ms': { type: 'string', default: '3000' },
  'agent-cli': { type: 'string', multiple: true },
  files: { type: 'boolean', default: false },
});
const reps = wholeNumber('reps', values.reps);
const reloads = wholeNumber('reloads', values.reloads);
const settleMs = wholeNumber('settle-ms', values['settle-ms'], 0);
const builds = (values['agent-cli']?.length ? values['agent-cli'] : [`agent=${DIST_CLI}`]).map((spec) => {
  const eq = spec.indexOf('=');
  if (eq <= 0) {
    console.error(`--agent-cli takes NAME=PATH (a build's dist/cli/main.js), got "${spec}"`);
    process.exit(2);
  }
  return { name: spec.slice(0, eq), cli: spec.slice(eq + 1) };
});

const CHILD_SAMPLE_MS = 5;

/** The largest VmRSS / RssAnon among `pid`'s child processes, sampled until `done` settles. */
async function childPeak(pid: number, done: Promise<unknown>): Promise<MemoryStatus> {
  let peak = { vmRss: 0, rssAnon: 0, rssFile: 0 };
  let finished = false;
  void done.finally(() => (finished = true)).catch(() => undefined);
  while (!finished) {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      let children: string[] = [];
      try {
        children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      } catch {
        continue;
      }
      for (const child of children) {
        try {
          const m = memoryStatus(Number(child));
          if (m.vmRss > peak.vmRss) peak = { ...peak, vmRss: m.vmRss };
          if (m.rssAnon > peak.rssAnon) peak = { ...peak, rssAnon: m.rssAnon };
        } catch {
          // gone between the listing and the read
        }
      }
    }
    await sleep(CHILD_SAMPLE_MS);
  }
  return peak;
}

interface Reload {
  readonly after: MemoryStatus;
  readonly ms: number;
  readonly child: MemoryStatus;
}
const ctx = new Context(PROFILES.full, (msg) => process.stderr.write(`[reload-cost] ${msg}\n`));
try {
  const base = await ctx.baseWith(values.files ? 1 : 0);
  const filesYaml = values.files ? `files: [{ path: item.json, items: [${ITEMS_NS}/${keyName(0)}], format: json }]\n` : '';
  const rows = new Map(builds.map((b) => [b.name, [] as Array<{ before: MemoryStatus; reloads: Reload[] }>]));
  for (let rep = 0; rep < reps; rep++) {
    for (const build of rep % 2 === 0 ? builds : [...builds].reverse()) {
      const filesArgs = values.files ? ['--files-dir', join(await tempDir('csb-reload-files-'), 'files')] : [];
      const agent = await startAgent(base.server, { cli: build.cli, core: SUT_CORE, prefixes: ['bench'], configYaml: `cacheTtl: 1h\n${filesYaml}`, args: ['--log-level', 'debug', ...filesArgs] });
      try {
        await waitReady(agent.adminUrl);
        // Start-up's trim (agent/heap-trimmer.ts) comes within about a second of listening.
        await agent.child.waitForLine((l) => l.includes('"heap trimmed"'), 10_000).catch(() => undefined);
        await sleep(settleMs);
        const before = memoryStatus(agent.child.pid);
        const done: Reload[] = [];
        for (let i = 0; i < reloads; i++) {
          const edited = performance.now();
          await writeFile(join(agent.dir, 'agent.yaml'), `cacheTtl: ${30 + i}m\n${filesYaml}`);
          // The (i+1)-th `config reloaded` line: each line meets the predicate once, earlier ones included.
          let count = 0;
          const line = agent.child.waitForLine((l) => l.includes('"config reloaded"') && ++count > i, 30_000);
          const [, child] = await Promise.all([line, childPeak(agent.child.pid, line)]);
          const ms = performance.now() - edited;
          await sleep(settleMs);
          done.push({ after: memoryStatus(agent.child.pid), ms, child });
        }
        rows.get(build.name)?.push({ before, reloads: done });
        const text = done.map((r, i) => `reload ${i + 1}: VmRSS ${r.after.vmRss.toFixed(1)}, RssAnon ${r.after.rssAnon.toFixed(1)}, ${r.ms.toFixed(0)} ms, child peak ${r.child.vmRss.toFixed(1)}/${r.child.rssAnon.toFixed(1)}`).join('; ');
        process.stderr.write(`[reload-cost] rep ${rep} ${build.name}: idle VmRSS ${before.vmRss.toFixed(1)}, RssAnon ${before.rssAnon.toFixed(1)} MiB; ${text}\n`);
      } finally {
        await agent.stop();
      }
    }
  }
  const med = (xs: number[]): string => `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
  console.log(`| build (${reps} agents each) | reload | VmRSS before | VmRSS after | +VmRSS | RssAnon before | RssAnon after | +RssAnon | edit → reloaded ms | child peak VmRSS | child peak RssAnon |`);
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [name, runs] of rows) {
    for (const index of [...new Set([0, reloads - 1])]) {
      const at = runs.map((r) => ({ before: r.before, ...(r.reloads[index] as Reload) }));
      console.log(
        `| ${name} | ${index + 1} | ${med(at.map((r) => r.before.vmRss))} | ${med(at.map((r) => r.after.vmRss))} | ${med(at.map((r) => r.after.vmRss - r.before.vmRss))} | ${med(at.map((r) => r.before.rssAnon))} | ${med(at.map((r) => r.after.rssAnon))} | ${med(at.map((r) => r.after.rssAnon - r.before.rssAnon))} | ${med(at.map((r) => r.ms))} | ${med(at.map((r) => r.child.vmRss))} | ${med(at.map((r) => r.child.rssAnon))} |`,
      );
    }
  }
} finally {
  await ctx.close();
  await stopAllChildren();
}
