/**
 * What the Dockerfile runs, without Docker: the build stage (dev
 * dependencies, then `npm run build`), the deps
 * stage (`npm ci --omit=dev --ignore-scripts`), and the runtime stage's
 * layout (dist/ + production node_modules + package.json, entrypoint
 * `config-sidecar` → dist/cli/main.js). The built output then runs: `--help`,
 * `agent --help`, `inject -f`, and a real server + agent started from it that
 * serve a value over the agent's socket. Heavy steps run once per file.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { goldenCases, REPO_ROOT } from './helpers/k8s-cli.ts';
import { waitReady } from './helpers/agent-process.ts';

const DOCKERFILE = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const NPM_FLAGS = ['--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'];

let dir: string;
let runtime: string;
let bin: string;
const children: ChildProcess[] = [];

/** The environment of the runtime image: Node 24 first on PATH, nothing from npm. */
function runtimeEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: dir, NODE_ENV: 'production', ...extra };
  return env;
}

function npm(cwd: string, args: string[]): void {
  execFileSync('npm', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_update_notifier: 'false' } });
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'dockerfile-'));
  // Stage "build": package files and all dependencies, then sources and npm run build. The
  // dependencies are the repository's own node_modules (installed by npm ci from the same
  // lockfile), linked rather than installed again, to keep the suite fast.
  const build = join(dir, 'build');
  mkdirSync(build);
  for (const f of ['package.json', 'package-lock.json']) cpSync(join(REPO_ROOT, f), join(build, f));
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(build, 'node_modules'));
  cpSync(join(REPO_ROOT, 'tsconfig.json'), join(build, 'tsconfig.json'));
  cpSync(join(REPO_ROOT, 'src'), join(build, 'src'), { recursive: true });
  npm(build, ['run', 'build']);
  // Stages "deps" and "runtime": production dependencies only (installed where the runtime
  // stage would copy them, which spares a copy of the tree), then dist and package.json.
  runtime = join(dir, 'app');
  mkdirSync(runtime);
  for (const f of ['package.json', 'package-lock.json']) cpSync(join(REPO_ROOT, f), join(runtime, f));
  npm(runtime, ['ci', '--omit=dev', '--ignore-scripts', ...NPM_FLAGS]);
  rmSync(join(runtime, 'package-lock.json'));
  cpSync(join(build, 'dist'), join(runtime, 'dist'), { recursive: true });
  cpSync(join(REPO_ROOT, 'package.json'), join(runtime, 'package.json'));
  chmodSync(join(runtime, 'dist', 'cli', 'main.js'), 0o755);
  mkdirSync(join(dir, 'bin'));
  bin = join(dir, 'bin', 'config-sidecar');
  symlinkSync(join(runtime, 'dist', 'cli', 'main.js'), bin);
  rmSync(build, { recursive: true, force: true }); // removes the link, not the repository's node_modules
});

after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function run(args: string[], input = ''): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(bin, args, { cwd: runtime, input, env: runtimeEnv(), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
    return { code: 0, stdout, stderr: '' };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { code: e.status, stdout: e.stdout, stderr: e.stderr };
  }
}

test('the Dockerfile is multi-stage on Node 24 slim, non-root, explicit COPYs, config-sidecar entrypoint, no HEALTHCHECK', () => {
  const froms = [...DOCKERFILE.matchAll(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/gim)].map((m) => m[2]);
  assert.deepEqual(froms, ['build', 'deps', 'runtime']);
  assert.match(DOCKERFILE, /^ARG NODE_IMAGE=node:24-bookworm-slim$/m);
  assert.doesNotMatch(DOCKERFILE, /^\s*HEALTHCHECK/im);
  assert.match(DOCKERFILE, /^USER 65532:65532$/m);
  assert.match(DOCKERFILE, /^ENTRYPOINT \["config-sidecar"\]$/m);
  assert.match(DOCKERFILE, /npm ci --omit=dev --ignore-scripts/);
  for (const m of DOCKERFILE.matchAll(/^COPY\s+(?!--from)(.+)$/gm)) {
    assert.doesNotMatch(m[1] as string, /(^|\s)\.\s/, 'no COPY of the whole context (there is no .dockerignore)');
  }
  const runtimeStage = DOCKERFILE.slice(DOCKERFILE.indexOf('AS runtime'));
  assert.match(runtimeStage, /COPY --from=deps \/app\/node_modules/);
  assert.match(runtimeStage, /COPY --from=build \/src\/dist/);
  assert.doesNotMatch(runtimeStage, /COPY src/);
});

test('the image holds production dependencies only: no node, typescript, eslint or test libraries', () => {
  const modules = readdirSync(join(runtime, 'node_modules'));
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
  // protobufjs (under @grpc/proto-loader) declares @types/node as a runtime dependency, so npm keeps it.
  const devOnly = Object.keys(pkg.devDependencies).filter((name) => name !== '@types/node');
  assert.ok(devOnly.includes('node') && devOnly.includes('typescript'));
  for (const dev of devOnly) assert.ok(!existsSync(join(runtime, 'node_modules', dev)), `devDependency ${dev} must not be in the image`);
  for (const prod of ['commander', 'zod', 'yaml', 'undici', '@grpc', 'lru-cache', 'chokidar']) assert.ok(modules.includes(prod), prod);
  const ts = readdirSync(join(runtime, 'dist'), { recursive: true }).map(String).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  assert.deepEqual(ts, [], 'compiled output only');
  assert.ok(existsSync(join(runtime, 'dist', 'shared', 'proto', 'configsidecar', 'v1', 'watch.proto')), 'assets copied into dist');
  assert.ok(statSync(join(runtime, 'dist', 'cli', 'main.js')).mode & 0o111);
});

test('the built entrypoint answers --help, agent --help and webhook --help', () => {
  const help = run(['--help']);
  assert.equal(help.code, 0, help.stderr);
  for (const command of ['server', 'agent', 'webhook', 'inject']) assert.match(help.stdout, new RegExp(`\\b${command}\\b`));
  const agent = run(['agent', '--help']);
  assert.equal(agent.code, 0, agent.stderr);
  assert.match(agent.stdout, /--server-grpc/);
  const webhook = run(['webhook', '--help']);
  assert.equal(webhook.code, 0, webhook.stderr);
  assert.match(webhook.stdout, /Examples:/);
});

test('every flag the injector gives the sidecar is one the built agent accepts', () => {
  const agentHelp = run(['agent', '--help']).stdout;
  const golden = readFileSync(goldenCases().find((c) => c.name === 'deployment-config-map')?.expectedPath as string, 'utf8');
  const flags = new Set([...golden.matchAll(/^\s+- (--[a-z-]+)/gm)].map((m) => m[1] as string));
  assert.ok(flags.size >= 10);
  for (const flag of flags) assert.match(agentHelp, new RegExp(`${flag}\\b`), `the agent has no ${flag}`);
  assert.match(run(['agent', '--help']).stdout, /--insecure/);
});

test('the built inject equals the golden output', () => {
  const c = goldenCases().find((g) => g.name === 'job');
  assert.ok(c);
  const out = run(['inject', '-f', '-'], c.input);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, readFileSync(c.expectedPath, 'utf8'));
});

/** Spawns the built entrypoint and resolves with the first JSON log line whose msg matches. */
function start(args: string[], env: NodeJS.ProcessEnv, msg: string): Promise<{ child: ChildProcess; line: Record<string, unknown> }> {
  const child = spawn(bin, args, { cwd: runtime, env: runtimeEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`no "${msg}" within 20 s; stderr: ${stderr}`)), 20_000);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buffer += d;
      for (const text of buffer.split('\n').slice(0, -1)) {
        try {
          const line = JSON.parse(text) as Record<string, unknown>;
          if (line.msg === msg) {
            clearTimeout(timer);
            resolve({ child, line });
          }
        } catch {
          // not a log line
        }
      }
      buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before "${msg}"; stderr: ${stderr}`));
    });
  });
}

function get(options: { socketPath?: string; url?: string; path?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(options.url ?? { socketPath: options.socketPath, path: options.path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function put(url: string, token: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('a server and an agent started from the built output serve a value over the agent socket, then stop on SIGTERM', async () => {
  const rootToken = randomBytes(24).toString('hex');
  const secrets = { CONFIG_SIDECAR_KEK: randomBytes(32).toString('base64'), CONFIG_SIDECAR_ROOT_TOKEN: rootToken };
  const dataDir = join(dir, 'server');
  const server = await start(
    ['server', `--data-dir=${dataDir}`, '--http-listen=127.0.0.1:0', '--grpc-listen=127.0.0.1:0', '--admin-listen=127.0.0.1:0'],
    secrets,
    'server listening',
  );
  const httpUrl = String(server.line.http);
  assert.equal(await put(`${httpUrl}/v1/items/example/shop/greeting?env=base`, rootToken, { kind: 'config', value: 'hello from the image' }), 200);

  const run = join(dir, 'run');
  mkdirSync(run);
  writeFileSync(join(run, 'token'), rootToken, { mode: 0o400 });
  const agent = await start(
    [
      'agent',
      `--server=${httpUrl}`,
      `--server-grpc=${String(server.line.grpc)}`,
      `--token-file=${join(run, 'token')}`,
      '--prefix=example/shop',
      '--prefetch=example/shop/greeting',
      `--socket=${join(run, 'sock', 'agent.sock')}`,
      '--http-listen=127.0.0.1:0',
      '--admin-listen=127.0.0.1:0',
      `--files-dir=${join(run, 'files')}`,
    ],
    {},
    'agent listening',
  );
  await waitReady(String(agent.line.admin));
  const item = await get({ socketPath: String(agent.line.socket), path: '/v1/items/example/shop/greeting' });
  assert.equal(item.status, 200, item.body);
  assert.equal((JSON.parse(item.body) as { value: unknown }).value, 'hello from the image');
  assert.equal(statSync(String(agent.line.socket)).mode & 0o777, 0o660);

  for (const child of [agent.child, server.child]) {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});
