/**
 * Memory bounded by the container's limit: the limit read from the agent's
 * own cgroup (v1 and v2 fixture trees under an injected root, never the root
 * cgroup's file), the bounds derived from it, a flag that cannot fit refused
 * naming both numbers, and the real agent under `--memory-limit` re-executed
 * with V8's old space sized (same PID) and reporting it on /readyz and /metrics.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { deriveMemoryBudget, heapFlags, BASELINE_RSS_BYTES, MAX_SSE_CLIENTS } from '../src/agent/memory-budget.ts';
import { detectMemoryLimit, locateCgroup, parseLimitValue } from '../src/agent/memory-limit.ts';
import { SettingError } from '../src/shared/settings.ts';
import { putItem, startAgentProcess, waitReady } from './helpers/agent-process.ts';
import { CLI, http, metricValue, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const MiB = 1024 * 1024;
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/cgroup/${name}/`, import.meta.url));
const noConstraint = (): number => 0;

test('cgroup v1 in a container: the memory controller mount rooted at the container cgroup', () => {
  const m = detectMemoryLimit({ root: fixture('v1'), constrainedMemory: noConstraint });
  assert.equal(m.source, 'cgroup-v1');
  assert.equal(m.limit, 256 * MiB);
  assert.equal(m.usage(), 100 * MiB);
  assert.equal(m.peak(), 120 * MiB);
  assert.equal(m.cgroupDir, '/sys/fs/cgroup/memory');
});

test('cgroup v1 on a host: the own cgroup below the mount, not the root file (which says unlimited)', () => {
  const m = detectMemoryLimit({ root: fixture('v1-host'), constrainedMemory: noConstraint });
  assert.equal(m.source, 'cgroup-v1');
  assert.equal(m.limit, 512 * MiB);
  assert.equal(m.cgroupDir, '/sys/fs/cgroup/memory/process_api/abc');
  assert.equal(m.peak(), 2 * MiB);
});

test('cgroup v2 with a namespace: memory.max, memory.current and memory.peak', () => {
  const m = detectMemoryLimit({ root: fixture('v2'), constrainedMemory: noConstraint });
  assert.equal(m.source, 'cgroup-v2');
  assert.equal(m.limit, 128 * MiB);
  assert.equal(m.usage(), 50 * MiB);
  assert.equal(m.peak(), 60 * MiB);
});

test('cgroup v2 "max" is no limit, even when the root cgroup file holds a number; usage still reads', () => {
  const m = detectMemoryLimit({ root: fixture('v2-unlimited'), constrainedMemory: noConstraint });
  assert.equal(m.limit, undefined);
  assert.equal(m.source, 'none');
  assert.equal(m.usage(), 10 * MiB);
  assert.equal(m.cgroupDir, '/sys/fs/cgroup/kubepods.slice/ctr');
});

test('values of 2^60 and more are unlimited; without cgroup files process.constrainedMemory() is the fallback', () => {
  assert.equal(parseLimitValue('9223372036854771712\n'), undefined);
  assert.equal(parseLimitValue('max\n'), undefined);
  assert.equal(parseLimitValue('268435456\n'), 256 * MiB);
  const none = fixture('does-not-exist');
  assert.equal(detectMemoryLimit({ root: none, constrainedMemory: () => 300 * MiB }).limit, 300 * MiB);
  assert.equal(detectMemoryLimit({ root: none, constrainedMemory: () => 300 * MiB }).source, 'constrained-memory');
  assert.equal(detectMemoryLimit({ root: none, constrainedMemory: () => 2 ** 64 }).limit, undefined);
  assert.equal(locateCgroup('0::/\n', ''), undefined, 'no cgroup2 mount: nothing to read');
});

test('derived bounds keep the agent under 80 % of the limit; a --cache-max-bytes that cannot fit names both numbers', () => {
  const none = deriveMemoryBudget({ limit: undefined, cacheMaxBytes: undefined, filesConfigured: false });
  assert.equal(none.cacheMaxBytes, 64 * MiB);
  assert.equal(none.oldSpaceBytes, undefined);
  const b = deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: undefined, filesConfigured: true });
  assert.equal(b.target, Math.floor(256 * MiB * 0.8));
  assert.ok(b.cacheMaxBytes < 64 * MiB && b.cacheMaxBytes > 8 * MiB, `cache ${b.cacheMaxBytes}`);
  assert.ok(b.maxSseClients <= MAX_SSE_CLIENTS);
  assert.ok(b.oldSpaceBytes !== undefined && b.oldSpaceBytes < (b.target ?? 0));
  assert.ok(BASELINE_RSS_BYTES + b.cacheMaxBytes * 4 < (b.target ?? 0));
  const bigger = deriveMemoryBudget({ limit: 1024 * MiB, cacheMaxBytes: undefined, filesConfigured: false });
  assert.ok(bigger.cacheMaxBytes > b.cacheMaxBytes, 'a larger limit gives a larger cache');
  assert.equal(deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: 8 * MiB, filesConfigured: false }).cacheMaxBytes, 8 * MiB, 'a flag that fits wins');
  assert.throws(
    () => deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: 512 * MiB, filesConfigured: false }),
    (err: unknown) => err instanceof SettingError && /--cache-max-bytes/.test(err.message) && /512MiB/.test(err.message) && /256MiB/.test(err.message),
  );
  assert.match(deriveMemoryBudget({ limit: 64 * MiB, cacheMaxBytes: undefined, filesConfigured: false }).warning ?? '', /64MiB/);
  assert.deepEqual(heapFlags(b, [], undefined), [`--max-old-space-size=${Math.floor((b.oldSpaceBytes ?? 0) / MiB)}`, '--max-semi-space-size=4']);
  assert.deepEqual(heapFlags(b, ['--max-old-space-size=300'], undefined), ['--max-semi-space-size=4'], "the operator's flag wins");
  assert.equal(heapFlags(b, [], '--max-old-space-size-percentage=50 --max-semi-space-size=4'), undefined);
  assert.equal(heapFlags(none, [], undefined), undefined, 'no limit: Node decides');
});

let server: ServerProcess | undefined;
before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/app/a', { kind: 'secret', value: 'a' });
});
after(async () => {
  await server?.stop();
  if (server) await rm(server.dataDir, { recursive: true, force: true });
});

test('under --memory-limit 256MiB the agent re-executes itself with V8 sized (same PID) and reports limit, bounds, usage and headroom', async () => {
  assert.ok(server);
  const agent = await startAgentProcess(server, { prefixes: ['production/app'], prefetch: ['production/app/a'], args: ['--memory-limit', '256MiB'] });
  try {
    await waitReady(agent.adminUrl);
    const line = await agent.waitForLog((l) => l.msg === 'memory budget');
    assert.equal(line.pid, agent.proc.pid, 'process.execve keeps the PID');
    assert.equal(line.limit, 256 * MiB);
    const expected = deriveMemoryBudget({ limit: 256 * MiB, cacheMaxBytes: undefined, filesConfigured: false });
    assert.equal(line.cacheMaxBytes, expected.cacheMaxBytes);
    // heap_size_limit is the old space plus the young generation (three semi-spaces).
    assert.equal(line.heapLimit, (expected.oldSpaceBytes ?? 0) - ((expected.oldSpaceBytes ?? 0) % MiB) + 3 * (expected.semiSpaceBytes ?? 0));
    const ready = await http(agent.adminUrl, 'GET', '/readyz');
    assert.match(ready.json.checks.memory.detail, /limit 256MiB \(flag\)/);
    assert.match(ready.json.checks.memory.detail, /cache ≤ .* \(limit\)/);
    assert.equal(await metricValue(agent.adminUrl, 'config_sidecar_agent_memory_limit_bytes'), 256 * MiB);
    assert.equal(await metricValue(agent.adminUrl, 'config_sidecar_agent_memory_cache_max_bytes'), expected.cacheMaxBytes);
    assert.equal(await metricValue(agent.adminUrl, 'config_sidecar_agent_memory_max_watch_streams'), expected.maxSseClients);
    // This machine's own cgroup (v1 here) is read for usage whatever the limit's source.
    const usage = await metricValue(agent.adminUrl, 'config_sidecar_agent_memory_cgroup_usage_bytes');
    if (usage !== undefined) assert.ok(usage > 0);
  } finally {
    await agent.stop();
    await rm(agent.dir, { recursive: true, force: true });
  }
});

test('a --cache-max-bytes that cannot fit the limit stops the agent at start (exit 2) naming both numbers', async () => {
  assert.ok(server);
  const child = spawn(
    process.execPath,
    [CLI, 'agent', '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--prefix', 'production/app', '--socket', '/nonexistent-dir/never/agent.sock', '--memory-limit', '256MiB', '--cache-max-bytes', '512MiB'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  child.stdout.resume();
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 2, stderr);
  assert.match(stderr, /--cache-max-bytes .*512MiB cannot fit the memory limit 256MiB/);
});
