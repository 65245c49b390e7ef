/**
 * Where the server's CPU goes while it delivers writes to thousands of Watch
 * streams (issue 21): a server (SQLite) under --cpu-prof on the SUT core,
 * agents from load processes on the load core (one HTTP/2 connection each,
 * bench/lib/agent-fleet.ts), a few writes each awaited at every stream; then
 * the profile's samples taken during the writes only (the connects are left
 * out), grouped by layer (grpc-js, Node's HTTP/2 and streams, our watch
 * code, GC) and by function (self time).
 *
 *   taskset -c 1 node bench/control-plane-profile.ts --agents 5000 --writes 10
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addAgents, FLEET_SERVER_FLAGS, stopFleets, tell, type Fleet } from './lib/agent-fleet.ts';
import { cpuSeconds, stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { keyName, ServerClient, startServer, valueFor } from './lib/stack.ts';
import { VALUE_BYTES } from './lib/context.ts';
import { benchArgs, wholeNumber } from './lib/args.ts';

const PREFIX = 'bench/cp-profile';
const DELIVERY_TIMEOUT_MS = 10_000;
const WRITE_GAP_MS = 200;
const TOP = 25;

const values = benchArgs('Usage: node bench/control-plane-profile.ts [--agents 5000] [--writes 10]', {
  agents: { type: 'string', default: '5000' },
  writes: { type: 'string', default: '10' },
});
const agents = wholeNumber('agents', values.agents);
const writes = wholeNumber('writes', values.writes);

interface CpuProfile {
  readonly nodes: ReadonlyArray<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** The layer a function belongs to, from its script. */
function layer(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(program)') return 'native (program)';
  if (url.includes('@grpc/grpc-js')) return 'grpc-js';
  if (url.includes('protobufjs') || url.includes('proto-loader')) return 'protobuf';
  if (url.includes('node:internal/http2')) return 'node:http2';
  if (url.includes('node:internal/streams') || url.includes('node:stream')) return 'node streams';
  if (url.includes('/src/server/watch/')) return 'ours: watch';
  if (url.includes('/src/')) return 'ours: other';
  if (url.startsWith('node:')) return 'node: other';
  return url === '' ? `native ${fn}` : 'other';
}

function summarise(profile: CpuProfile, fromUs: number, toUs: number): void {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  const layers = new Map<string, number>();
  let total = 0;
  let at = profile.startTime;
  profile.samples.forEach((id, i) => {
    at += profile.timeDeltas[i] ?? 0;
    if (at < fromUs || at > toUs) return;
    const dt = profile.timeDeltas[i] ?? 0;
    const frame = byId.get(id)?.callFrame;
    if (!frame || frame.functionName === '(idle)') return;
    const file = frame.url.replace(/^file:\/\/.*?\/(node_modules|src)\//, '$1/');
    const key = `${frame.functionName || '(anonymous)'} ${file ? `${file}:${frame.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    const l = layer(frame.url, frame.functionName);
    layers.set(l, (layers.get(l) ?? 0) + dt);
    total += dt;
  });
  console.log(`busy samples during the writes: ${(total / 1000).toFixed(0)} ms`);
  console.log('\nby layer (self time):');
  for (const [l, t] of [...layers].sort((a, b) => b[1] - a[1])) console.log(`  ${((t / total) * 100).toFixed(1).padStart(5)} %  ${(t / 1000).toFixed(1).padStart(8)} ms  ${l}`);
  console.log(`\ntop ${TOP} functions (self time):`);
  for (const [fn, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${((t / total) * 100).toFixed(1).padStart(5)} %  ${fn}`);
}

const profDir = await mkdtemp(join(tmpdir(), 'csb-cp-prof-'));
const server = await startServer(SUT_CORE, FLEET_SERVER_FLAGS, undefined, undefined, ['--cpu-prof', '--cpu-prof-dir', profDir]);
const client = new ServerClient(server);
const fleets: Fleet[] = [];
let window: [number, number] = [0, 0];
let cpu = 0;
let deliveries = 0;
try {
  await client.put(`${PREFIX}/${keyName(0)}`, valueFor(0, 0, VALUE_BYTES));
  const fleet = await addAgents(console.log, fleets, server, PREFIX, agents);
  await sleep(1_000);
  const cpu0 = cpuSeconds(server.child.pid);
  const from = process.hrtime.bigint();
  for (let k = 1; k <= writes; k++) {
    const sendNs = process.hrtime.bigint();
    const { revision } = await client.put(`${PREFIX}/${keyName(0)}`, valueFor(0, k, VALUE_BYTES));
    const replies = fleet.processes.map((p) => p.next('delivered'));
    for (const p of fleet.processes) tell(p, { type: 'expect', revision, sendNs: sendNs.toString(), timeoutMs: DELIVERY_TIMEOUT_MS });
    for (const reply of await Promise.all(replies)) if (reply.type === 'delivered') deliveries += reply.lagsMs.length;
    await sleep(WRITE_GAP_MS);
  }
  window = [Number(from / 1000n), Number(process.hrtime.bigint() / 1000n)];
  cpu = cpuSeconds(server.child.pid) - cpu0;
} finally {
  stopFleets(fleets);
  await client.close();
  await server.stop();
  await stopAllChildren();
}
console.log(`server CPU during the writes: ${(cpu * 1000).toFixed(0)} ms for ${deliveries} deliveries (${((cpu * 1e6) / Math.max(1, deliveries)).toFixed(1)} µs each, heartbeats included)`);
const file = (await readdir(profDir)).find((f) => f.endsWith('.cpuprofile'));
if (!file) throw new Error('the server wrote no .cpuprofile (did it exit cleanly?)');
summarise(JSON.parse(await readFile(join(profDir, file), 'utf8')) as CpuProfile, window[0], window[1]);
await rm(profDir, { recursive: true, force: true });
