/**
 * Start-up: from spawning `config-sidecar agent` with 100 prefetched items
 * (server local) to its /readyz answering 200, and how much of that passes
 * before the agent's first upstream call. A small TCP relay in front of the
 * server's REST port timestamps the first connection the agent opens.
 */
import { createServer, connect, type AddressInfo, type Server } from 'node:net';
import { seedRange, type Context } from '../lib/context.ts';
import { startChild, SUT_CORE } from '../lib/proc.ts';
import { freePort, keyName, tempDir } from '../lib/stack.ts';
import { median } from '../lib/stats.ts';
import { request } from 'undici';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Row, ScenarioResult } from '../lib/types.ts';

const NAMESPACE = 'bench/start';
const TARGET_MS = 500;
const READY_POLL_MS = 5;
const READY_TIMEOUT_MS = 20_000;

/** Relays TCP to `target`, recording when the first connection arrives. */
async function relay(targetUrl: string): Promise<{ url: string; firstAt: () => bigint | undefined; reset: () => void; close: () => Promise<void> }> {
  const target = new URL(targetUrl);
  let first: bigint | undefined;
  const server: Server = createServer((socket) => {
    first ??= process.hrtime.bigint();
    const upstream = connect(Number(target.port), target.hostname);
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    firstAt: () => first,
    reset: () => (first = undefined),
    close: () =>
      new Promise((r) => {
        server.close(() => r());
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}

export async function startup(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const { cli, compiled } = await ctx.compiledCli();
  const base = await ctx.baseWith(0);
  const n = ctx.profile.startupPrefetch;
  await seedRange(base.client, NAMESPACE, 0, n, 60_000);
  const proxy = await relay(base.server.httpUrl);
  const dir = await tempDir('csb-start-');
  const tokenFile = join(dir, 'upstream-token');
  await writeFile(tokenFile, base.server.rootToken, { mode: 0o600 });
  const readyMs: number[] = [];
  const beforeUpstreamMs: number[] = [];
  try {
    for (let rep = 0; rep < ctx.profile.startupReps; rep++) {
      const adminPort = await freePort();
      proxy.reset();
      const t0 = process.hrtime.bigint();
      const child = startChild(
        'agent-startup',
        process.execPath,
        [
          cli,
          'agent',
          '--server',
          proxy.url,
          '--server-grpc',
          base.server.grpcAddress,
          '--token-file',
          tokenFile,
          '--socket',
          join(dir, `run-${rep}`, 'agent.sock'),
          '--http-listen',
          '127.0.0.1:0',
          '--admin-listen',
          `127.0.0.1:${adminPort}`,
          '--prefix',
          'bench',
          '--prefetch',
          Array.from({ length: n }, (_, i) => `${NAMESPACE}/${keyName(i)}`).join(','),
        ],
        { core: SUT_CORE, env: { PATH: process.env.PATH ?? '' }, cwd: dir },
      );
      try {
        const deadline = Date.now() + READY_TIMEOUT_MS;
        let readyAt: bigint | undefined;
        while (Date.now() < deadline && child.proc.exitCode === null) {
          try {
            const res = await request(`http://127.0.0.1:${adminPort}/readyz`, { headersTimeout: 1_000 });
            await res.body.dump();
            if (res.statusCode === 200) {
              readyAt = process.hrtime.bigint();
              break;
            }
          } catch {
            // not listening yet
          }
          await new Promise((r) => setTimeout(r, READY_POLL_MS));
        }
        if (readyAt === undefined) throw new Error(`agent not ready within ${READY_TIMEOUT_MS} ms: ${child.output().slice(-500)}`);
        readyMs.push(Number(readyAt - t0) / 1e6);
        const first = proxy.firstAt();
        beforeUpstreamMs.push(first === undefined ? Number.NaN : Number(first - t0) / 1e6);
      } finally {
        await child.stop();
      }
    }
  } finally {
    await proxy.close();
    await rm(dir, { recursive: true, force: true });
  }
  const ready = median(readyMs);
  const before = median(beforeUpstreamMs);
  const rows: Row[] = [
    { system: 'agent', metric: `spawn → /readyz 200 (${n} prefetched)`, unit: 'ms', values: readyMs, better: 'lower' },
    { system: 'agent', metric: 'spawn → first upstream call', unit: 'ms', values: beforeUpstreamMs, better: 'lower' },
    { system: 'agent', metric: 'share before the first upstream call', unit: '%', values: readyMs.map((r, i) => ((beforeUpstreamMs[i] ?? Number.NaN) / r) * 100), better: 'lower' },
  ];
  return {
    id: 'start-up',
    title: 'Start-up: spawn to ready',
    status: 'ok',
    setup: `${ctx.profile.startupReps} cold starts of the agent (Node 24, ${compiled ? 'compiled JavaScript as shipped' : 'TypeScript source: the build failed'}) with ${n} --prefetch items, server local; /readyz polled every ${READY_POLL_MS} ms`,
    rows,
    targets: [{ target: `spawn → ready ≤ ${TARGET_MS} ms`, measured: `${ready.toFixed(0)} ms (${before.toFixed(0)} ms before the first upstream call)`, pass: Number.isFinite(ready) ? ready <= TARGET_MS : null }],
    notes: [
      'The time before the first upstream call is process start, module loading and settings; the rest is the prefetch (envelopes and DEKs) and the watch stream connecting.',
    ],
  };
}
