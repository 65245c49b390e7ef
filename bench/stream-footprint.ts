/**
 * Where a connected agent's memory goes on the server (issue 21; results in
 * docs/ARCHITECTURE.md, "Control-plane scale"): a server (SQLite) on the SUT
 * core, agents added in steps by load processes on the load core (one HTTP/2
 * connection each, bench/lib/agent-fleet.ts); at each step the server's RSS
 * and, with --heap-snapshot, a heap snapshot. Between two steps it prints
 * the growth per added agent by node type and constructor (native memory
 * such as nghttp2's shows up as `native Node / …`).
 *
 *   taskset -c 1 node bench/stream-footprint.ts --steps 1000,5000 --heap-snapshot
 */
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addAgents, FLEET_SERVER_FLAGS, stopFleets, type Fleet } from './lib/agent-fleet.ts';
import { snapshotGroups } from './lib/heap-snapshot.ts';
import { rssBytes, stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { startServer } from './lib/stack.ts';
import { benchArgs } from './lib/args.ts';

const PREFIX = 'bench/footprint';
/** After connecting, before reading RSS: the opens' audit writes and garbage settle. */
const SETTLE_MS = 3_000;
/** Longest wait for the server to finish writing a snapshot. */
const SNAPSHOT_TIMEOUT_MS = 120_000;
const TOP = 30;

const values = benchArgs('Usage: node bench/stream-footprint.ts [--steps 1000,5000] [--heap-snapshot]', {
  steps: { type: 'string', default: '1000,5000' },
  'heap-snapshot': { type: 'boolean', default: false },
});
const steps = values.steps.split(',').map((n) => Number(n.trim()));
if (steps.some((n, i) => !Number.isInteger(n) || n < 1 || (i > 0 && n <= (steps[i - 1] as number)))) {
  console.error(`--steps must be increasing whole numbers of agents, got "${values.steps}"`);
  process.exit(2);
}

const snapshotDir = await mkdtemp(join(tmpdir(), 'csb-stream-footprint-'));
const snapshotFlags = values['heap-snapshot'] ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshotDir}`] : [];
const server = await startServer(SUT_CORE, FLEET_SERVER_FLAGS, undefined, undefined, snapshotFlags);
const fleets: Fleet[] = [];
try {
  await sleep(SETTLE_MS);
  const idle = rssBytes(server.child.pid);
  console.log(`idle server: RSS ${(idle / 2 ** 20).toFixed(1)} MiB`);
  const snapshots: Array<{ agents: number; file: string }> = [];
  let connected = 0;
  for (const agents of steps) {
    await addAgents((m) => console.log(m), fleets, server, PREFIX, agents - connected);
    connected = agents;
    await sleep(SETTLE_MS);
    const rss = rssBytes(server.child.pid);
    console.log(`${agents} agents: RSS ${(rss / 2 ** 20).toFixed(1)} MiB, ${((rss - idle) / 1024 / agents).toFixed(1)} KiB per agent over idle`);
    if (values['heap-snapshot']) snapshots.push({ agents, file: await takeSnapshot(server.child.pid, snapshots.length) });
  }
  for (let i = 1; i < snapshots.length; i++) {
    const [from, to] = [snapshots[i - 1], snapshots[i]] as [(typeof snapshots)[0], (typeof snapshots)[0]];
    const added = to.agents - from.agents;
    const a = snapshotGroups(from.file);
    const b = snapshotGroups(to.file);
    console.log(`\nheap growth from ${from.agents} to ${to.agents} agents: ${((b.total - a.total) / 1024 / added).toFixed(2)} KiB per agent (the snapshot's self sizes)`);
    const growth = [...b.groups].map(([key, g]) => ({ key, bytes: g.bytes - (a.groups.get(key)?.bytes ?? 0), count: g.count - (a.groups.get(key)?.count ?? 0) }));
    for (const g of growth.sort((x, y) => y.bytes - x.bytes).slice(0, TOP)) {
      console.log(`  ${(g.bytes / 1024 / added).toFixed(2).padStart(7)} KiB ${(g.count / added).toFixed(2).padStart(6)} × ${g.key}`);
    }
  }
} finally {
  stopFleets(fleets);
  await server.stop('SIGKILL');
  await stopAllChildren();
  await rm(snapshotDir, { recursive: true, force: true });
}

/** Signals the server to write its `index`th heap snapshot and waits until the file is complete (its size stops changing). */
async function takeSnapshot(pid: number, index: number): Promise<string> {
  // taskset execs node, so the child's pid is the server's.
  process.kill(pid, 'SIGUSR2');
  const until = Date.now() + SNAPSHOT_TIMEOUT_MS;
  let lastSize = -1;
  for (;;) {
    await sleep(1_000);
    const file = readdirSync(snapshotDir).filter((f) => f.endsWith('.heapsnapshot')).sort()[index];
    const size = file ? statSync(join(snapshotDir, file)).size : -1;
    if (file && size > 0 && size === lastSize) return join(snapshotDir, file);
    lastSize = size;
    if (Date.now() > until) throw new Error(`no complete heap snapshot from the server within ${SNAPSHOT_TIMEOUT_MS / 1000} s`);
  }
}
