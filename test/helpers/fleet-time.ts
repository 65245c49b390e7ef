/**
 * Moves a test server's clock the way time passes for a live fleet. A real
 * agent reports every REPORT_INTERVAL_MS, and the rollout judge counts an
 * agent whose last report is three intervals old as gone; one jump of the
 * server's clock would make every live agent look gone. So time passes in
 * steps of at most one interval: the server's clock moves, each live agent's
 * report clock follows (its report falls due, as it would have), and the
 * next step waits for those reports at the new time. An agent whose process
 * has exited stays silent.
 */
import { REPORT_INTERVAL_MS } from '../../src/server/fleet/agent-registry.ts';
import type { AgentView } from '../../src/shared/fleet-proto.ts';
import { hook, type AgentProcess } from './agent-process.ts';
import { http } from './server-process.ts';

const REPORT_WAIT_MS = 10_000;
const NUDGE_AGAIN_MS = 500;

export interface FleetServer {
  readonly adminUrl: string;
  readonly httpUrl: string;
  readonly rootToken: string;
}

const alive = (agent: AgentProcess): boolean => agent.proc.exitCode === null && agent.proc.signalCode === null;

/** Passes `ms` of server time for the server and the live agents of `agents` (by agent id). */
export async function passFleetTime(server: FleetServer, agents: ReadonlyMap<string, AgentProcess>, ms: number): Promise<void> {
  for (let left = ms; left > 0; left -= REPORT_INTERVAL_MS) {
    const step = Math.min(left, REPORT_INTERVAL_MS);
    const moved = await http(server.adminUrl, 'POST', `/test/clock/advance?ms=${step}`);
    if (moved.status !== 200) throw new Error(`the server's clock did not move: ${moved.status} ${moved.text}`);
    const now = moved.json.now as number;
    const live = [...agents].filter(([, agent]) => alive(agent));
    const nudge = (ids: readonly string[], by: number) => Promise.all(ids.map((id) => hook((agents.get(id) as AgentProcess).adminUrl, 'POST', `/debug/clock/advance?ms=${by}&clock=report`)));
    await nudge(
      live.map(([id]) => id),
      step,
    );
    const deadline = Date.now() + REPORT_WAIT_MS;
    let nudgeAt = Date.now() + NUDGE_AGAIN_MS;
    for (;;) {
      const list = ((await http(server.httpUrl, 'GET', '/v1/agents', { token: server.rootToken })).json?.agents ?? []) as AgentView[];
      const late = live.filter(([id]) => !list.some((a) => a.id === id && Date.parse(a.lastSeen) >= now)).map(([id]) => id);
      if (late.length === 0) break;
      if (Date.now() > deadline) throw new Error(`no report from ${late.join(', ')} within ${REPORT_WAIT_MS} ms after the server's clock moved to ${new Date(now).toISOString()}`);
      // A report in flight during the move (its next one is set a whole interval after its answer), a step shorter than
      // the interval, or a retry's backoff: move its report clock on by an interval.
      if (Date.now() > nudgeAt) {
        await nudge(late, REPORT_INTERVAL_MS);
        nudgeAt = Date.now() + NUDGE_AGAIN_MS;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
