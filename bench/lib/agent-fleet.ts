/**
 * Simulated agents for the control-plane tools: load processes
 * (agent-streams.ts) forked and pinned to the load core, each holding up to
 * AGENTS_PER_PROCESS Watch streams on their own HTTP/2 connections, driven
 * over IPC.
 */
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, ParentMessage } from './agent-streams.ts';
import { HAS_TASKSET, LOAD_CORE } from './proc.ts';
import type { ServerHandle } from './stack.ts';

const AGENT_SCRIPT = fileURLToPath(new URL('./agent-streams.ts', import.meta.url));
/** Streams per load process: each holds its agents' connections and reads every event they receive. */
export const AGENTS_PER_PROCESS = 2_500;
/** Concurrent connection handshakes per load process while opening. */
const OPEN_CONCURRENCY = 64;
const OPEN_TIMEOUT_MS = 180_000;
/** Server flags that let one bench token hold thousands of streams (the per-pod caps would refuse them). */
export const FLEET_SERVER_FLAGS = ['--max-watch-streams-per-pod', '1000000', '--watch-open-rate', '0', '--max-grpc-connections', '1000000'];

export interface LoadProcess {
  readonly proc: ChildProcess;
  readonly count: number;
  next(type: ChildMessage['type']): Promise<ChildMessage>;
}

function startLoadProcess(count: number): LoadProcess {
  const proc = fork(AGENT_SCRIPT, [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  // Every thread of the load process on the load core (fork cannot go through taskset).
  if (HAS_TASKSET && proc.pid) spawnSync('taskset', ['-a', '-p', '-c', String(LOAD_CORE), String(proc.pid)], { stdio: 'ignore' });
  const inbox: ChildMessage[] = [];
  const waiters: Array<{ type: string; resolve: (m: ChildMessage) => void; reject: (err: Error) => void }> = [];
  proc.on('message', (m: ChildMessage) => {
    const i = waiters.findIndex((w) => w.type === m.type);
    if (i >= 0) waiters.splice(i, 1)[0]?.resolve(m);
    else inbox.push(m);
  });
  proc.once('exit', (code) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`agent load process exited (${code})`));
  });
  return {
    proc,
    count,
    next(type) {
      const i = inbox.findIndex((m) => m.type === type);
      if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0] as ChildMessage);
      if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error(`agent load process exited (${proc.exitCode ?? proc.signalCode})`));
      return new Promise((resolve, reject) => waiters.push({ type, resolve, reject }));
    },
  };
}

export function tell(p: LoadProcess, message: ParentMessage): void {
  p.proc.send(message);
}

export interface Fleet {
  readonly processes: LoadProcess[];
  readonly agents: number;
}

/** Opens `count` more agents watching `prefix` on `server`; the new fleet is also pushed onto `fleets`. */
export async function addAgents(log: (msg: string) => void, fleets: Fleet[], server: Pick<ServerHandle, 'grpcAddress' | 'rootToken'>, prefix: string, count: number): Promise<Fleet> {
  const processes: LoadProcess[] = [];
  for (let left = count; left > 0; left -= AGENTS_PER_PROCESS) processes.push(startLoadProcess(Math.min(left, AGENTS_PER_PROCESS)));
  const added = { processes, agents: count };
  fleets.push(added);
  const started = Date.now();
  for (const p of processes) tell(p, { type: 'open', address: server.grpcAddress, token: server.rootToken, prefix, count: p.count, openConcurrency: OPEN_CONCURRENCY });
  const opened = await withTimeout(Promise.all(processes.map((p) => p.next('opened'))), OPEN_TIMEOUT_MS, `opening ${count} agents`);
  const failed = opened.reduce((n, m) => n + (m.type === 'opened' ? m.failed : 0), 0);
  const firstError = opened.map((m) => (m.type === 'opened' ? m.firstError : undefined)).find(Boolean);
  log(`${count - failed}/${count} agents connected in ${((Date.now() - started) / 1000).toFixed(1)} s${firstError ? ` (first error: ${firstError})` : ''}`);
  if (failed > 0) throw new Error(`${failed} of ${count} agents could not open a Watch stream: ${firstError ?? ''}`);
  return added;
}

/** Ends every load process (they close their connections and exit). */
export function stopFleets(fleets: readonly Fleet[]): void {
  for (const f of fleets) for (const p of f.processes) if (p.proc.connected) tell(p, { type: 'close' });
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms / 1000} s`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
