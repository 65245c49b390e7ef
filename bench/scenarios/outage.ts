/**
 * Outage: reads at a fixed rate while the server is killed (SIGKILL) a third
 * of the way in. Within --max-stale every read must keep succeeding from the
 * cache, marked stale (Warning: 110 / X-Config-Stale), with no errors.
 */
import { readAll, seedRange, type Context } from '../lib/context.ts';
import { runFixedRate } from '../lib/load.ts';
import { LOAD_CORE, SUT_CORE } from '../lib/proc.ts';
import { keyName, ServerClient, startAgent, startServer, waitReady } from '../lib/stack.ts';
import { request } from 'undici';
import type { Row, ScenarioResult } from '../lib/types.ts';

const NAMESPACE = 'bench/out';
const KEYS = 200;
const READ_RATE = 1_000;

export async function outage(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const errorRates: number[] = [];
  const staleShares: number[] = [];
  const afterKill: number[] = [];
  const readyAfter: number[] = [];
  const notes: string[] = [];
  for (let rep = 0; rep < ctx.profile.reps; rep++) {
    const server = await startServer(LOAD_CORE);
    const client = new ServerClient(server);
    let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
    try {
      await seedRange(client, NAMESPACE, 0, KEYS, 60_000);
      agent = await startAgent(server, { core: SUT_CORE, prefixes: ['bench'], args: ['--cache-ttl', '1h', '--max-stale', '1h'] });
      await waitReady(agent.adminUrl);
      const paths = Array.from({ length: KEYS }, (_, j) => `/v1/items/${NAMESPACE}/${keyName(j)}?format=raw`);
      await readAll(agent.socketPath, paths);
      let killedAt: bigint | undefined;
      let post = 0;
      let postOk = 0;
      let postStale = 0;
      const killTimer = setTimeout(() => {
        killedAt = process.hrtime.bigint();
        server.child.proc.kill('SIGKILL');
      }, (ctx.profile.outageS * 1000) / 3);
      const result = await runFixedRate(
        { kind: 'socket', socketPath: agent.socketPath },
        {
          rate: READ_RATE,
          durationS: ctx.profile.outageS,
          connections: 4,
          nextPath: (i) => paths[i % paths.length] as string,
          onResponse: (info) => {
            if (killedAt === undefined || info.startedNs < killedAt) return;
            post++;
            if (info.status === 200) postOk++;
            if (info.headers['x-config-stale'] !== undefined) postStale++;
          },
        },
      );
      clearTimeout(killTimer);
      // Reads the client could not send on schedule (it fell behind) are not the agent's errors.
      const failedPost = post - postOk + result.errors;
      errorRates.push(post > 0 ? (failedPost / post) * 100 : Number.NaN);
      staleShares.push(post > 0 ? (postStale / post) * 100 : Number.NaN);
      afterKill.push(post);
      const res = await request(`${agent.adminUrl}/readyz`);
      await res.body.dump();
      readyAfter.push(res.statusCode === 200 ? 1 : 0);
    } finally {
      await agent?.stop();
      await client.close().catch(() => {});
      await server.stop();
    }
  }
  const worstError = Math.max(...errorRates);
  const rows: Row[] = [
    { system: 'agent', metric: 'reads after the kill', unit: '', values: afterKill, better: 'higher' },
    { system: 'agent', metric: 'error rate after the kill', unit: '%', values: errorRates, better: 'lower' },
    { system: 'agent', metric: 'stale-marked share after the kill', unit: '%', values: staleShares, better: 'higher' },
    { system: 'agent', metric: '/readyz 200 after the run (1 = yes)', unit: '', values: readyAfter, better: 'higher' },
  ];
  return {
    id: 'outage',
    title: 'Outage: server killed mid-run',
    status: 'ok',
    setup: `${KEYS} cached keys read at ${READ_RATE} req/s for ${ctx.profile.outageS} s; the server is SIGKILLed after ${(ctx.profile.outageS / 3).toFixed(1)} s; --max-stale 1h`,
    rows,
    targets: [
      { target: 'error rate 0 after the kill (within max-stale)', measured: `${worstError.toFixed(3)} % (worst run)`, pass: Number.isFinite(worstError) ? worstError === 0 : null },
      { target: 'reads after the kill are stale-marked', measured: `${Math.min(...staleShares).toFixed(1)} % (lowest run)`, pass: staleShares.every((s) => s > 0) },
    ],
    notes: [
      ...notes,
      'Reads in the first moments after the kill may be served unmarked until the agent notices the stream is gone (connection reset or the heartbeat watchdog); the share shows how many were marked.',
    ],
  };
}
