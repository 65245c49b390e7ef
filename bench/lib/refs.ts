/**
 * References started and stopped by the suite: the bare node:http server
 * (socket and TCP), nginx serving a 1 KiB static file on a Unix socket (a
 * non-daemon child with its own temp config), Redis on a Unix socket driven
 * by redis-benchmark, and lru-cache in-process. A missing binary skips its
 * reference with a message; the suite installs nothing.
 */
import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LRUCache } from 'lru-cache';
import { newHistogram, summarise, type LatencySummary } from './load.ts';
import { LOAD_CORE, pinnedCommand, startChild, which, type Child } from './proc.ts';
import { tempDir } from './stack.ts';

const BARE_HTTP = fileURLToPath(new URL('../refs/bare-http.ts', import.meta.url));
export const VALUE_BYTES = 1024;

export interface RefServer {
  readonly child: Child;
  readonly socketPath?: string;
  readonly url?: string;
  readonly path: string;
  stop(): Promise<void>;
}

export async function startBareHttp(core: number, kind: 'socket' | 'tcp'): Promise<RefServer> {
  const dir = await tempDir('csb-bare-');
  const socketPath = join(dir, 'bare.sock');
  const child = startChild(`bare-http-${kind}`, process.execPath, [BARE_HTTP, kind === 'socket' ? socketPath : 'tcp', String(VALUE_BYTES)], { core });
  const line = await child.waitForLine((l) => l.startsWith('listening '));
  const where = line.slice('listening '.length).trim();
  return {
    child,
    path: '/',
    ...(kind === 'socket' ? { socketPath } : { url: `http://127.0.0.1:${where}` }),
    async stop() {
      await child.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** nginx with one worker and no master, so the measured PID does all the work. */
export async function startNginx(core: number): Promise<RefServer | string> {
  const bin = which('nginx');
  if (!bin) return 'nginx not found on PATH or in /usr/sbin (Debian: apt-get install nginx-light)';
  const dir = await tempDir('csb-nginx-');
  const socketPath = join(dir, 'nginx.sock');
  await mkdir(join(dir, 'www'));
  await writeFile(join(dir, 'www', 'value'), Buffer.alloc(VALUE_BYTES, 'x'));
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp-body;
  proxy_temp_path ${dir}/tmp-proxy;
  fastcgi_temp_path ${dir}/tmp-fcgi;
  uwsgi_temp_path ${dir}/tmp-uwsgi;
  scgi_temp_path ${dir}/tmp-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  open_file_cache max=16;
  default_type application/octet-stream;
  server {
    listen unix:${socketPath};
    root ${dir}/www;
    location / { try_files /value =404; }
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  const child = startChild('nginx', bin, ['-e', `${dir}/error.log`, '-p', dir, '-c', join(dir, 'nginx.conf')], { core });
  // nginx prints nothing when it starts; wait for the socket to accept.
  await waitForSocket(socketPath, child);
  return {
    child,
    socketPath,
    path: '/value',
    async stop() {
      await child.stop('SIGQUIT');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function waitForSocket(socketPath: string, child: Child, timeoutMs = 10_000): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(socketPath);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (child.proc.exitCode !== null) throw new Error(`${child.name} exited: ${child.output().slice(-1000)}`);
    if (Date.now() > deadline) throw new Error(`${child.name} did not accept on ${socketPath} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface RedisRef {
  readonly child: Child;
  readonly socketPath: string;
  readonly benchmarkBin: string;
  stop(): Promise<void>;
}

export async function startRedis(core: number): Promise<RedisRef | string> {
  const bin = which('redis-server');
  const benchmarkBin = which('redis-benchmark');
  if (!bin || !benchmarkBin) return 'redis-server/redis-benchmark not found (Debian: apt-get install redis-server)';
  const dir = await tempDir('csb-redis-');
  const socketPath = join(dir, 'redis.sock');
  const child = startChild('redis', bin, ['--port', '0', '--unixsocket', socketPath, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir, '--io-threads', '1'], {
    core,
  });
  await waitForSocket(socketPath, child);
  return {
    child,
    socketPath,
    benchmarkBin,
    async stop() {
      await child.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisBenchResult {
  readonly requests: number;
  readonly rps: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly seconds: number;
}

/** `redis-benchmark -t get -d 1024` over the socket, pinned to the load core; parses its CSV line. */
export async function redisBenchmark(redis: RedisRef, connections: number, requests: number, keyspace: number): Promise<RedisBenchResult> {
  const [cmd, args] = pinnedCommand(LOAD_CORE, redis.benchmarkBin, [
    '-s',
    redis.socketPath,
    '-t',
    'get',
    '-d',
    String(VALUE_BYTES),
    '-c',
    String(connections),
    '-n',
    String(requests),
    '-r',
    String(keyspace),
    '--csv',
  ]);
  const started = process.hrtime.bigint();
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    p.stdout.setEncoding('utf8').on('data', (c: string) => (text += c));
    const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(text);
      else reject(new Error(`redis-benchmark exited ${code}: ${text.slice(-500)}`));
    });
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const line = out.split('\n').find((l) => l.startsWith('"GET"'));
  if (!line) throw new Error(`unexpected redis-benchmark output: ${out.slice(0, 300)}`);
  const cols = line.split(',').map((c) => Number(c.replaceAll('"', '')));
  return { requests, rps: cols[1] ?? Number.NaN, p50Us: (cols[4] ?? Number.NaN) * 1000, p99Us: (cols[6] ?? Number.NaN) * 1000, seconds };
}

/** Fills Redis with `keyspace` 1 KiB values under redis-benchmark's key names (key:000000000042). */
export async function redisFill(redis: RedisRef, keyspace: number): Promise<void> {
  const [cmd, args] = pinnedCommand(LOAD_CORE, redis.benchmarkBin, ['-s', redis.socketPath, '-t', 'set', '-d', String(VALUE_BYTES), '-c', '16', '-n', String(keyspace * 3), '-r', String(keyspace), '-q']);
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: 'ignore' });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`redis-benchmark SET exited ${code}`))));
  });
}

export interface InProcessResult {
  readonly opsPerSecond: number;
  readonly nsPerOp: number;
  readonly latency: LatencySummary;
}

/** Reference 4: lru-cache get of a 1 KiB Buffer in the caller's own process (what an app caching itself gets). */
export function lruCacheInProcess(keys: number, ops: number): InProcessResult {
  const cache = new LRUCache<string, Buffer>({ max: keys + 1 });
  const names = Array.from({ length: keys }, (_, i) => `bench/items/k${String(i).padStart(6, '0')}`);
  for (const name of names) cache.set(name, Buffer.alloc(VALUE_BYTES, 'x'));
  let sink = 0;
  // Throughput: a tight loop timed as a whole.
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) sink += cache.get(names[(i * 7919) % keys] as string)?.length ?? 0;
  const ns = Number(process.hrtime.bigint() - t0);
  // Latency: each get timed on its own (hrtime's own cost, ~50 ns, included).
  const h = newHistogram();
  const latencyOps = Math.min(ops, 200_000);
  for (let i = 0; i < latencyOps; i++) {
    const s = process.hrtime.bigint();
    sink += cache.get(names[(i * 104729) % keys] as string)?.length ?? 0;
    h.recordValue(Math.max(1, Number(process.hrtime.bigint() - s)));
  }
  if (sink < 0) console.log(sink);
  return { opsPerSecond: ops / (ns / 1e9), nsPerOp: ns / ops, latency: summarise(h) };
}
