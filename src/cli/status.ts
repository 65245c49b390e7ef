/**
 * `config-sidecar status [--item NS/NAME]`: the fleet as GET /v1/agents sees
 * it. With --item, how many of the agents that serve the item's namespace
 * have applied its latest revision, and who lags by how much; without, every
 * agent by lag. Exit 0 when every listed agent is caught up, 1 when some lag
 * (so a rollout script can wait on it), 2/3 as every command.
 */
import type { AgentView, AgentsResponse } from '../shared/fleet-proto.ts';
import { Option, type Command } from 'commander';
import { namespaceMatchesPrefix } from '../shared/paths.ts';
import { action, CliError, EXIT } from './cli-util.ts';
import { withServer } from './item-commands.ts';
import { listAllItems } from './item-listing.ts';
import { call, type ServerFlags } from './server-client.ts';

function ago(iso: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 90 ? `${s}s ago` : `${Math.round(s / 60)}m ago`;
}

function line(a: AgentView, behind: number): string {
  return `  ${a.id}  applied ${a.appliedRevision}${behind > 0 ? ` (${behind} behind)` : ''}  ${a.silent ? 'SILENT' : a.connected ? 'connected' : 'DISCONNECTED'}  ${a.health}  seen ${ago(a.lastSeen)}`;
}

export function register(program: Command): void {
  withServer(
    program
      .command('status')
      .description('Show the fleet: which agents applied which revision (GET /v1/agents; needs agents:read).')
      .addOption(new Option('--item <namespace/name>', 'count the agents serving this item that applied its latest revision'))
      .addOption(new Option('--json', 'print the answer as JSON')),
  )
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar status
  $ config-sidecar status --item production/db/password     # exit 1 while some agent lags

Each agent shows connected, DISCONNECTED (its last report said its stream was down) or
SILENT (no report for 30 s: its pod is gone, stopped or cut off; listed until --agent-expiry).

Exit codes: 0 every agent caught up, 1 some lag (or refused), 2 bad usage, 3 server unreachable.`,
    )
    .action(
      action(async (flags: ServerFlags & { item?: string; json?: boolean }) => {
        const fleet = (await call(flags, 'GET', '/v1/agents')) as unknown as AgentsResponse;
        let target = fleet.currentRevision;
        let agents = fleet.agents;
        let title = `${agents.length} agent(s); server revision ${fleet.currentRevision}`;
        if (flags.item !== undefined) {
          const cut = flags.item.lastIndexOf('/');
          if (cut <= 0) throw new CliError(`--item "${flags.item}" is not namespace/name, e.g. production/db/password`, EXIT.usage);
          const namespace = flags.item.slice(0, cut);
          const name = flags.item.slice(cut + 1);
          const found = (await listAllItems(flags, namespace)).find((i) => i.namespace === namespace && i.name === name);
          if (!found) throw new CliError(`${flags.item} does not exist (or the token may not list ${namespace})`, EXIT.failed);
          target = found.revision;
          agents = agents.filter((a) => a.prefixes.some((p) => namespaceMatchesPrefix(namespace, p)));
          const current = agents.filter((a) => a.appliedRevision >= target).length;
          title = `${flags.item}: latest revision ${target}; ${current} of ${agents.length} agent(s) serving it have applied it`;
        }
        const lagging = agents.filter((a) => a.appliedRevision < target).sort((a, b) => a.appliedRevision - b.appliedRevision);
        if (flags.json) {
          process.stdout.write(`${JSON.stringify({ revision: target, agents: agents.length, current: agents.length - lagging.length, lagging: lagging.map((a) => ({ id: a.id, appliedRevision: a.appliedRevision, behind: target - a.appliedRevision, connected: a.connected })) }, null, 2)}\n`);
        } else {
          const rest = agents.filter((a) => a.appliedRevision >= target);
          process.stdout.write(`${title}\n${lagging.length ? `lagging:\n${lagging.map((a) => line(a, target - a.appliedRevision)).join('\n')}\n` : ''}${rest.length ? `current:\n${rest.map((a) => line(a, 0)).join('\n')}\n` : ''}`);
        }
        if (lagging.length > 0) process.exitCode = EXIT.failed;
      }),
    );
}
