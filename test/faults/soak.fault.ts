/**
 * Fault suite: a 60-second soak. Readers hammer the agent's socket while a
 * writer changes the value twice a second; every read must answer 200, and
 * every write must reach the agent. RSS of both processes is sampled and
 * printed (memory is measured here and in bench/, never asserted).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request } from 'node:http';
import { http, removeDir, startServerProcess } from '../helpers/server-process.ts';
import { startAgentProcess, waitReady } from '../helpers/agent-process.ts';

const SOAK_MS = Number(process.env.CONFIG_SIDECAR_SOAK_MS ?? 60_000);
const MAX_READS = 2_000_000;
const ITEM = 'soak/app/value';

async function rssMiB(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024);
}

test(`soak: ${SOAK_MS / 1000} s of reads through the agent with a writer twice a second; every read answered, every write delivered; RSS sampled`, async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
  });
  const token = server.rootToken;
  assert.equal((await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token, body: { kind: 'config', value: { n: 0 } } })).status, 200);
  const agent = await startAgentProcess(server, { prefixes: ['soak'], prefetch: [ITEM] });
  t.after(async () => {
    await agent.stop('SIGKILL');
    await removeDir(agent.dir);
  });
  await waitReady(agent.adminUrl);

  const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 4 });
  t.after(() => keepAlive.destroy());
  const read = (): Promise<{ status: number; n: number }> =>
    new Promise((resolve, reject) => {
      const req = request({ socketPath: agent.socketPath, path: `/v1/items/${ITEM}`, agent: keepAlive }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { value?: { n?: number } };
          resolve({ status: res.statusCode ?? 0, n: body.value?.n ?? -1 });
        });
      });
      req.on('error', reject);
      req.end();
    });

  const deadline = Date.now() + SOAK_MS;
  let reads = 0;
  let failures = 0;
  let newestSeen = 0;
  const samples: string[] = [];
  const reader = async (): Promise<void> => {
    while (Date.now() < deadline && reads < MAX_READS) {
      const r = await read();
      reads += 1;
      if (r.status !== 200) failures += 1;
      newestSeen = Math.max(newestSeen, r.n);
    }
  };
  let written = 0;
  let maxLagMs = 0;
  const writer = async (): Promise<void> => {
    while (Date.now() < deadline - 1_000) {
      written += 1;
      const res = await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token, body: { kind: 'config', value: { n: written } } });
      assert.equal(res.status, 200, res.text);
      const at = Date.now();
      while (newestSeen < written && Date.now() - at < 5_000) await new Promise((resolve) => setTimeout(resolve, 5));
      maxLagMs = Math.max(maxLagMs, Date.now() - at);
      assert.ok(newestSeen >= written, `write ${written} reached the agent's readers within 5 s`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };
  const sampler = async (): Promise<void> => {
    while (Date.now() < deadline) {
      samples.push(`${Math.round((SOAK_MS - (deadline - Date.now())) / 1000)}s server ${await rssMiB(server.proc.pid)} MiB agent ${await rssMiB(agent.proc.pid)} MiB reads ${reads}`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(10_000, SOAK_MS / 6)));
    }
  };
  await Promise.all([reader(), reader(), reader(), writer(), sampler()]);
  for (const s of samples) t.diagnostic(`RSS ${s}`);
  t.diagnostic(`tried: ${reads} reads (${Math.round(reads / (SOAK_MS / 1000))}/s) and ${written} writes over ${SOAK_MS / 1000} s; held: ${failures} failed reads, every write seen by readers, slowest after ${maxLagMs} ms`);
  assert.equal(failures, 0);
});
