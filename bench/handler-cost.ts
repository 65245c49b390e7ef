/**
 * The request side of a cached read, without sockets: CPU nanoseconds per
 * call of `handleDataRequest` (a hit on one of 200 URLs, each call with its
 * own young URL string and headers object as node:http hands them over)
 * followed by the metrics' `countResponse`, for this tree and for other
 * source trees (`--tree NAME=DIR`, e.g. a worktree of main), each round in
 * a fresh process with the agent's semi-space flags, the trees taking turns.
 * The whole-agent A/B (cached-read-ab.ts) cannot resolve a change of a few
 * tens of nanoseconds in ~15 µs; this can (docs/FOOTPRINT-LOG.md,
 * "Footprint (issue 15)", q16).
 *
 *   taskset -c 1 node bench/handler-cost.ts --rounds 5 --tree base=/work/wt/base
 *
 * `--listener tcp`: the TCP listener's requests, each with the pod token
 * header (a young string per call, as node's parser makes it) and the
 * proof of one of 16 keep-alive connections (src/agent/pod-token.ts; a tree
 * without proofs ignores it and checks the token in full every time).
 *
 * `--write-head`: each call also hands the result's status and headers to
 * node's `res.writeHead` on a socket-less `ServerResponse` and reads the
 * head node built, as a write would: what the agent's headers cost on both
 * sides, building them and node validating and joining them
 * (docs/FOOTPRINT-LOG.md, h28).
 */
import { spawnSync } from 'node:child_process';
import type { OutgoingHttpHeader, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { median } from './lib/stats.ts';
import { headlessResponse } from './lib/headless-response.ts';
import type * as RequestHandler from '../src/agent/request-handler.ts';
import type * as AgentMetrics from '../src/agent/agent-metrics.ts';
import type * as ItemRepresentation from '../src/agent/item-representation.ts';

const values = benchArgs('Usage: node bench/handler-cost.ts [--rounds 5] [--calls 3000000] [--listener socket|tcp] [--write-head] [--tree NAME=DIR …]', {
  listener: { type: 'string', default: 'socket' },
  rounds: { type: 'string', default: '5' },
  calls: { type: 'string', default: '3000000' },
  'write-head': { type: 'boolean', default: false },
  /** Another source tree (its src/agent/…), measured in the same rounds (repeatable). */
  tree: { type: 'string', multiple: true },
  /** Internal: run one measurement in this process, of the tree at DIR. */
  child: { type: 'string' },
});
const calls = wholeNumber('calls', values.calls);
if (values.listener !== 'socket' && values.listener !== 'tcp') throw new Error(`--listener is socket or tcp, got ${values.listener}`);
const listener = values.listener;
/** Keep-alive connections the TCP calls take turns on (the A/B's and the suite's 16). */
const CONNECTIONS = 16;

/** The bin's semi-space flags (src/cli/runtime-settings.ts), so the young generation collects as often as in the agent. */
const NODE_FLAGS = ['--max-semi-space-size=4', '--min-semi-space-size=4'];
const KEYS = 200;
const WARMUP_CALLS = 200_000;

async function measure(dir: string): Promise<number> {
  const handler = (await import(pathToFileURL(`${dir}/src/agent/request-handler.ts`).href)) as typeof RequestHandler;
  const metricsModule = (await import(pathToFileURL(`${dir}/src/agent/agent-metrics.ts`).href)) as typeof AgentMetrics;
  const { rawEtag } = (await import(pathToFileURL(`${dir}/src/agent/item-representation.ts`).href)) as typeof ItemRepresentation;
  const metrics = metricsModule.createAgentMetrics({ entries: () => 0, bytes: () => 0 });
  const value = {
    namespace: 'bench/ns', name: 'k', env: 'prod', kind: 'secret' as const, version: 3, revision: 7, etag: '"3"',
    plaintext: Buffer.alloc(1024, 'x'), json: Buffer.alloc(1100, 'x'), rawEtag: rawEtag('"3"'), fetchedAt: 0, leases: 0, dropped: false,
  };
  const hit = { value, source: 'hit' as const, staleSeconds: 0, ageSeconds: 0 };
  const token = Buffer.from('pod-token-0123456789-abcdefghijklmnopqrstu');
  const deps = { prefixes: () => ['bench/ns'], podToken: token, env: 'prod', read: () => Promise.resolve(hit), readCached: () => hit, release: () => {} };
  const proofs = Array.from({ length: CONNECTIONS }, () => ({ token: undefined, against: undefined }));
  const urls = Array.from({ length: KEYS }, (_, i) => Buffer.from(`/v1/items/bench/ns/k${i}?format=raw`));
  let statuses = 0;
  const res = values['write-head'] ? headlessResponse() : undefined;
  let headBytes = 0;
  const once = (i: number): void => {
    // node:http's parser makes a new URL string and headers object per request.
    const url = (urls[i % KEYS] as Buffer).toString('latin1');
    const result =
      listener === 'socket'
        ? handler.handleDataRequest({ method: 'GET', url, headers: { host: 'agent' }, listener, tokenProof: undefined }, deps)
        : handler.handleDataRequest({ method: 'GET', url, headers: { host: 'agent', 'x-config-sidecar-token': token.toString('latin1') }, listener, tokenProof: proofs[i % CONNECTIONS] }, deps);
    const status = (result as { status: number }).status;
    if (res !== undefined) headBytes += writeHead(res, status, (result as { headers: OutgoingHttpHeaders | OutgoingHttpHeader[] }).headers);
    metrics.countResponse(listener, status);
    statuses += status;
  };
  for (let i = 0; i < WARMUP_CALLS; i++) once(i);
  const before = process.cpuUsage();
  for (let i = 0; i < calls; i++) once(i);
  const used = process.cpuUsage(before);
  if (statuses !== 200 * (WARMUP_CALLS + calls)) throw new Error('a call did not answer 200');
  if (res !== undefined && headBytes === 0) throw new Error('node built no head');
  return ((used.user + used.system) * 1000) / calls;
}

/** `writeHead` once more on the same response, and the head's length read as a write would read it (flattened). */
function writeHead(res: ServerResponse, status: number, headers: OutgoingHttpHeaders | OutgoingHttpHeader[]): number {
  // node refuses a second head; clearing its internal `_header` lets one response stand for many (bench only).
  (res as unknown as { _header: string | null })._header = null;
  res.writeHead(status, headers);
  return Buffer.byteLength((res as unknown as { _header: string })._header, 'latin1');
}

if (values.child !== undefined) {
  console.log(String(await measure(values.child)));
} else {
  const self = fileURLToPath(import.meta.url);
  const trees: Array<[string, string]> = [['this tree', fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '')]];
  for (const spec of values.tree ?? []) {
    const eq = spec.indexOf('=');
    if (eq < 1) {
      console.error(`--tree takes NAME=DIR, got "${spec}"`);
      process.exit(2);
    }
    trees.push([spec.slice(0, eq), spec.slice(eq + 1)]);
  }
  const samples = new Map<string, number[]>(trees.map(([name]) => [name, []]));
  for (let round = 0; round < wholeNumber('rounds', values.rounds); round++) {
    for (const [name, dir] of trees) {
      const run = spawnSync(process.execPath, [...NODE_FLAGS, self, '--child', dir, '--calls', String(calls), '--listener', listener, ...(values['write-head'] ? ['--write-head'] : [])], { encoding: 'utf8' });
      if (run.status !== 0) throw new Error(`${name}: ${run.stderr}`);
      samples.get(name)?.push(Number(run.stdout.trim()));
    }
  }
  console.log(`${values.rounds} rounds × ${calls} cached reads over ${listener} (handleDataRequest${values['write-head'] ? ' + writeHead' : ''} + countResponse); CPU ns per read, median (range)`);
  for (const [name, ns] of samples) console.log(`${name.padEnd(12)} ${median(ns).toFixed(0).padStart(5)} ns (${Math.min(...ns).toFixed(0)}–${Math.max(...ns).toFixed(0)})`);
}
