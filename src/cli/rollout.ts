/**
 * `config-sidecar rollout start|status|promote|pause|resume|abort`: staged
 * rollouts of a change set (POST /v1/rollouts and friends). `start` reads the
 * same change file as `put --from-file`; `status ID` exits 1 when the rollout
 * was rolled back or aborted, so a deploy script can wait on it.
 */
import { Option, type Command } from 'commander';
import type { CanaryStatus, RolloutView, RolloutsResponse } from '../shared/protocol.ts';
import { ROLLOUT_ACTIONS } from '../shared/protocol-constants.ts';
import { formatDuration, parseDuration } from '../shared/units.ts';
import { action, CliError, EXIT } from './cli-util.ts';
import { withServer } from './item-commands.ts';
import { call, type ServerFlags } from './server-client.ts';

const DEFAULT_STEPS = '10,50,100';
const DEFAULT_BAKE = '5m';

function parseSteps(text: string): number[] {
  const steps = text.split(',').map((s) => Number(s.trim()));
  if (steps.length === 0 || steps.some((n) => !Number.isInteger(n) || n < 1 || n > 100)) {
    throw new CliError(`--steps "${text}" must be increasing percentages 1-100 separated by commas, ending at 100, e.g. ${DEFAULT_STEPS}`, EXIT.usage);
  }
  return steps;
}

/** A canary's health levels in order, e.g. "connected, applied, files published, app healthy". */
export function canaryLevels(c: CanaryStatus): string {
  if (!c.reporting) return 'not reporting';
  const levels = [c.connected ? 'connected' : c.silent ? `stream down (silent: no report since ${c.lastReport ?? '?'})` : 'stream down', c.applied ? 'applied' : 'not applied yet'];
  if (c.files !== 'none') levels.push(c.files === 'published' ? 'files published' : 'files not published yet');
  levels.push(`app ${c.appHealth === 'unknown' ? 'health unknown' : c.appHealth}`);
  return levels.join(', ');
}

function describe(r: RolloutView): string {
  const head = `rollout ${r.id}: ${r.state}, step ${r.step + 1} of ${r.steps.length} (${r.percent}%), bake ${formatDuration(r.bakeSeconds * 1000)}, maxUnhealthy ${r.maxUnhealthy}`;
  const lines = [head, `  items:   ${r.items.join(', ')}`, `  canary:  ${r.canary.length ? r.canary.join(', ') : '(none)'}`];
  for (const c of r.canaryStatus ?? []) lines.push(`    ${c.agent}: ${canaryLevels(c)}`);
  if (r.unhealthy.length) lines.push(`  unhealthy:\n${r.unhealthy.map((u) => `    ${u.agent}: ${u.reason}`).join('\n')}`);
  if (r.reason) lines.push(`  reason:  ${r.reason}`);
  return lines.join('\n');
}

const rolloutPath = (id: string): string => `/v1/rollouts/${encodeURIComponent(id)}`;

export function register(program: Command): void {
  const rollout = program
    .command('rollout')
    .description('Staged rollouts: a change set served first by a few canary agents, then more, rolled back by itself when canaries turn unhealthy.')
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar rollout start --from-file changes.yaml --steps 10,50,100 --bake 5m
  $ config-sidecar rollout status                      # every rollout
  $ config-sidecar rollout status ro-3f9a0c1d2e4b      # exit 1 once rolled back or aborted
  $ config-sidecar rollout promote ro-3f9a0c1d2e4b     # complete now: every agent serves the candidate

Exit codes: 0 done, 1 refused (or status: rolled back / aborted), 2 bad usage, 3 server unreachable.`,
    );

  withServer(
    rollout
      .command('start')
      .description('Start a staged rollout of the change file (the format of `put --from-file`); prints the rollout and its first canaries.')
      .requiredOption('--from-file <changes.yaml>', 'the change set to roll out')
      .addOption(new Option('--steps <percents>', 'increasing percentages of the agents serving the items, ending at 100').default(DEFAULT_STEPS))
      .addOption(new Option('--bake <duration>', 'how long each step is observed before the next (0 = advance at once)').default(DEFAULT_BAKE))
      .addOption(new Option('--max-unhealthy <n>', 'more unhealthy canaries than this roll the rollout back').default('0'))
      .addOption(new Option('--json', 'print the answer as JSON')),
  ).action(
    action(async (flags: ServerFlags & { fromFile: string; steps: string; bake: string; maxUnhealthy: string; json?: boolean }) => {
      const bakeMs = parseDuration(flags.bake);
      if (bakeMs === undefined || bakeMs % 1000 !== 0) throw new CliError(`--bake "${flags.bake}" must be a duration in whole seconds such as 30s, 5m or 1h`, EXIT.usage);
      const maxUnhealthy = Number(flags.maxUnhealthy);
      if (!Number.isInteger(maxUnhealthy) || maxUnhealthy < 0) throw new CliError(`--max-unhealthy "${flags.maxUnhealthy}" must be a whole number ≥ 0`, EXIT.usage);
      const { readChangeFile } = await import('./change-file.ts');
      const { changes } = readChangeFile(flags.fromFile);
      const view = (await call(flags, 'POST', '/v1/rollouts', { changes, steps: parseSteps(flags.steps), bakeSeconds: bakeMs / 1000, maxUnhealthy })) as unknown as RolloutView;
      process.stdout.write(flags.json ? `${JSON.stringify(view, null, 2)}\n` : `${describe(view)}\n`);
    }),
  );

  withServer(
    rollout
      .command('status')
      .description('Show one rollout, or every rollout (needs agents:read on the namespaces they change); while active, each canary with its health levels (connected, or stream down and silent once not heard from for 30 s; applied; files published; app health).')
      .argument('[id]', 'a rollout id')
      .addOption(new Option('--json', 'print the answer as JSON')),
  ).action(
    action(async (id: string | undefined, flags: ServerFlags & { json?: boolean }) => {
      if (id === undefined) {
        const { rollouts } = (await call(flags, 'GET', '/v1/rollouts')) as unknown as RolloutsResponse;
        process.stdout.write(flags.json ? `${JSON.stringify({ rollouts }, null, 2)}\n` : `${rollouts.length ? rollouts.map(describe).join('\n') : 'no rollouts'}\n`);
        return;
      }
      const view = (await call(flags, 'GET', rolloutPath(id))) as unknown as RolloutView;
      process.stdout.write(flags.json ? `${JSON.stringify(view, null, 2)}\n` : `${describe(view)}\n`);
      if (view.state === 'rolled_back' || view.state === 'aborted') process.exitCode = EXIT.failed;
    }),
  );

  const summaries: Record<(typeof ROLLOUT_ACTIONS)[number], string> = {
    promote: 'Complete the rollout now: the candidate becomes the stable version, served by every agent.',
    pause: 'Stop advancing (an unhealthy canary still rolls it back).',
    resume: 'Advance again; the current step bakes anew.',
    abort: 'End the rollout: every agent serves the stable version again.',
  };
  for (const verb of ROLLOUT_ACTIONS) {
    withServer(
      rollout
        .command(verb)
        .description(summaries[verb])
        .argument('<id>', 'the rollout id')
        .addOption(new Option('--json', 'print the answer as JSON')),
    ).action(
      action(async (id: string, flags: ServerFlags & { json?: boolean }) => {
        const view = (await call(flags, 'POST', `${rolloutPath(id)}/${verb}`)) as unknown as RolloutView;
        process.stdout.write(flags.json ? `${JSON.stringify(view, null, 2)}\n` : `${describe(view)}\n`);
      }),
    );
  }
}
