/**
 * An agent's memory and CPU around cached reads, for the footprint tools:
 * /proc status idle and after the agent read every key once, and the agent's
 * CPU per read over a pipelined load on its socket.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'undici';
import { readAll } from './context.ts';
import { cpuSeconds, memoryStatus, type MemoryStatus } from './proc.ts';
import { waitReady, type AgentHandle } from './stack.ts';

/** After start and after the load, before reading /proc: startup and the load's garbage settle. */
export const SETTLE_MS = 1_500;
const PIPELINE = 16;

/** Waits for the agent, reads its status idle, has it read every path once (cached), and reads its status again. */
export async function idleThenLoaded(agent: AgentHandle, paths: readonly string[]): Promise<{ idle: MemoryStatus; loaded: MemoryStatus }> {
  await waitReady(agent.adminUrl);
  await sleep(SETTLE_MS);
  const idle = memoryStatus(agent.child.pid);
  await readAll(agent.socketPath, paths, 32);
  await sleep(SETTLE_MS);
  return { idle, loaded: memoryStatus(agent.child.pid) };
}

/** Reads `total` cached paths pipelined on one socket connection; resolves with the agent's CPU µs per read. */
export async function cpuPerRead(pid: number, socketPath: string, paths: readonly string[], total: number): Promise<number> {
  const client = new Client('http://localhost', { socketPath, pipelining: PIPELINE });
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const res = await client.request({ method: 'GET', path: paths[next++ % paths.length] as string });
      await res.body.dump();
    }
  };
  const before = cpuSeconds(pid);
  try {
    await Promise.all(Array.from({ length: PIPELINE }, worker));
  } finally {
    await client.close();
  }
  return ((cpuSeconds(pid) - before) / total) * 1e6;
}
