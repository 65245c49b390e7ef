/**
 * What the Dockerfile runs, without Docker: the build stage (dev
 * dependencies, then `npm run build`), the deps
 * stage (`npm ci --omit=dev --ignore-scripts`), and the runtime stage's
 * layout (dist/ + production node_modules + package.json, entrypoint
 * `config-sidecar` → dist/cli/main.js). The built output then runs: `--help`,
 * `agent --help`, `inject -f`, and a real server + agent started from it that
 * serve a value over the agent's socket (and the server its status page). Heavy steps run once per file.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseAllDocuments } from 'yaml';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { goldenCases, REPO_ROOT } from './helpers/k8s-cli.ts';
import { waitReady } from './helpers/agent-process.ts';
import { loadedPackages } from './helpers/loaded-scripts.ts';
import { asIdentity, canRead, canUseSocket, makePodDir, makeVolume, ownedByRoot, podSecurity, podSupport, reachableProject, reachableTree, unreachableFor } from './helpers/pod-harness.ts';

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

const rootTokenForImage = randomBytes(24).toString('hex');

/** Spawns the built entrypoint and resolves with the first JSON log line whose msg matches. */
function start(args: string[], env: NodeJS.ProcessEnv, msg: string): Promise<{ child: ChildProcess; line: Record<string, unknown>; stderr: () => string }> {
  return startCommand(bin, args, runtime, msg, env);
}

/** Spawns `command` (the entrypoint, or it wrapped by the pod harness) and waits for a log line. */
function startCommand(command: string, args: string[], cwd: string, msg: string, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; line: Record<string, unknown>; stderr: () => string }> {
  const child = spawn(command, args, { cwd, env: runtimeEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
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
            resolve({ child, line, stderr: () => stderr });
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

/** The next JSON log line of `child` that `match` accepts (lines already read are not seen). */
function nextLogLine(child: ChildProcess, match: (line: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => {
      child.stdout?.off('data', onData);
      reject(new Error(`no matching log line within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (d: string): void => {
      buffer += d;
      for (const text of buffer.split('\n').slice(0, -1)) {
        try {
          const line = JSON.parse(text) as Record<string, unknown>;
          if (match(line)) {
            clearTimeout(timer);
            child.stdout?.off('data', onData);
            resolve(line);
            return;
          }
        } catch {
          // not a log line
        }
      }
      buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
    };
    child.stdout?.on('data', onData);
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
  // The status page ships in the image: its files are in dist/, not only in src/.
  for (const asset of ['', 'app.js', 'style.css']) assert.equal((await get({ url: `${httpUrl}/ui/${asset}` })).status, 200, `/ui/${asset} from the built output`);

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
    // The inspector lists what the serving process loaded (test/helpers/loaded-scripts.ts).
    { NODE_OPTIONS: '--inspect=127.0.0.1:0' },
    'agent listening',
  );
  await waitReady(String(agent.line.admin));
  const item = await get({ socketPath: String(agent.line.socket), path: '/v1/items/example/shop/greeting' });
  assert.equal(item.status, 200, item.body);
  assert.equal((JSON.parse(item.body) as { value: unknown }).value, 'hello from the image');
  assert.equal(statSync(String(agent.line.socket)).mode & 0o777, 0o660);
  // The settings were validated before the bin's re-exec: the image's serving process holds no zod or commander.
  const packages = await loadedPackages(agent.stderr());
  assert.ok(packages.has('lru-cache') && !packages.has('zod') && !packages.has('commander'), [...packages].join(' '));

  for (const child of [agent.child, server.child]) {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});

/**
 * The image's user for real: the runtime stage's output runs as the injected
 * sidecar runs, through the pod harness. The uids, groups and volumes come from
 * what the injector emits for a pod (the built `inject` on a golden input: the
 * sidecar's runAsUser/runAsGroup, the pod's fsGroup, its emptyDirs and their
 * medium), not from a copy. The project tree is read-only and root-owned, as
 * the container's read-only root filesystem; this file's temp dir is 0700
 * (mktemp -d), so the harness must stage the tree where uid 65532 can reach it.
 */
test('the runtime stage runs as the injected securityContext (65532, fsGroup, no capabilities) from a read-only tree on kubelet-made volumes', async (t) => {
  const support = podSupport();
  if (!support.ok) {
    t.skip(support.reason);
    return;
  }
  const golden = goldenCases().find((c) => c.name === 'deployment-config-map');
  assert.ok(golden);
  const injected = run(['inject', '-f', '-'], golden.input);
  assert.equal(injected.code, 0, injected.stderr);
  const docs = parseAllDocuments(injected.stdout).map((d) => d.toJS() as Record<string, any>); // eslint-disable-line @typescript-eslint/no-explicit-any
  const configMap = docs.find((d) => d.kind === 'ConfigMap');
  const podSpec = docs.find((d) => d.kind === 'Deployment')?.spec.template.spec;
  const sidecar = [...(podSpec.initContainers ?? []), ...podSpec.containers].find((c: { name: string }) => c.name === 'config-sidecar');
  assert.ok(sidecar, 'the injector emitted the sidecar');
  const fsGroup = podSpec.securityContext.fsGroup as number;
  const sc = sidecar.securityContext;
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  const pod = podSecurity(fsGroup, { uid: sc.runAsUser, gid: sc.runAsGroup });

  // The pod's file system: each volume the sidecar mounts, made as the kubelet makes it.
  const podDir = await makePodDir('cs-image-pod-');
  const unmounts: Array<() => Promise<void>> = [];
  t.after(async () => {
    for (const u of unmounts.reverse()) await u();
    rmSync(podDir, { recursive: true, force: true });
  });
  const mounts = new Map<string, string>();
  for (const m of sidecar.volumeMounts as Array<{ name: string; mountPath: string }>) {
    const volume = (podSpec.volumes as Array<Record<string, any>>).find((v) => v.name === m.name); // eslint-disable-line @typescript-eslint/no-explicit-any
    const local = join(podDir, 'volumes', m.name);
    mounts.set(m.mountPath, local);
    if (volume?.emptyDir) {
      const made = await makeVolume(local, fsGroup, volume.emptyDir.medium === 'Memory' ? { medium: 'Memory', sizeBytes: 4 * 1024 * 1024 } : {});
      unmounts.push(() => made.unmount());
    } else {
      // projected token and ConfigMap volumes: root-owned files of group fsGroup with the volume's defaultMode.
      mkdirSync(local, { recursive: true });
      const mode = (volume?.projected?.defaultMode ?? volume?.configMap?.defaultMode ?? 0o644) as number;
      const files: Record<string, string> = volume?.configMap ? (configMap?.data ?? {}) : { token: rootTokenForImage, 'ca.crt': '' };
      for (const [name, text] of Object.entries(files)) {
        writeFileSync(join(local, name), text, { mode });
        chownSync(join(local, name), 0, fsGroup);
      }
      chmodSync(local, 0o755);
    }
  }
  const localPath = (path: string): string => {
    for (const [mountPath, local] of mounts) if (path === mountPath || path.startsWith(`${mountPath}/`)) return local + path.slice(mountPath.length);
    return path;
  };

  // A read-only, root-owned project tree uid 65532 can reach (staged out of this 0700 temp dir when needed).
  assert.ok(unreachableFor(join(runtime, 'dist', 'cli', 'main.js'), pod.agent) !== undefined, 'the test tree sits under a 0700 temp dir');
  const tree = reachableTree(pod.agent, runtime, ['dist', 'node_modules', 'package.json'], 'dist/cli/main.js');
  assert.equal(tree.staged, true, 'staged into a 0755 directory');
  t.after(() => rmSync(tree.root, { recursive: true, force: true }));
  execFileSync('chown', ['-R', '0:0', tree.root]);
  execFileSync('chmod', ['-R', 'go-w', tree.root]);
  const readOnly = spawnSync('sh', ['-c', `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"`, 'sh', tree.root]).status === 0;
  if (readOnly) unmounts.push(async () => void spawnSync('umount', ['-l', tree.root]));

  // The server, as root (it is not what this test is about), from the same built output.
  const rootToken = rootTokenForImage;
  const server = await start(
    ['server', `--data-dir=${join(dir, 'image-server')}`, '--http-listen=127.0.0.1:0', '--grpc-listen=127.0.0.1:0', '--admin-listen=127.0.0.1:0'],
    { CONFIG_SIDECAR_KEK: randomBytes(32).toString('base64'), CONFIG_SIDECAR_ROOT_TOKEN: rootToken },
    'server listening',
  );
  const httpUrl = String(server.line.http);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  assert.equal(await put(`${httpUrl}/v1/items/production/shop/db-password?env=base`, rootToken, { kind: 'secret', value: 'pw-1' }), 200);
  assert.equal(await put(`${httpUrl}/v1/items/production/shop/db-user?env=base`, rootToken, { kind: 'config', value: 'shop' }), 200);
  assert.equal(await put(`${httpUrl}/v1/items/shared/tls/shop-key?env=base`, rootToken, { kind: 'secret', value: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }), 200);

  // The injected args, pointed at this server and the local volumes; listeners on free loopback ports.
  const args = (sidecar.args as string[])
    .filter((a) => !a.startsWith('--server') && !a.startsWith('--http-listen') && !a.startsWith('--admin-listen'))
    .map((a) => a.replace(/^(--[a-z-]+=)(\/.*)$/, (_m, flag: string, path: string) => flag + localPath(path)));
  args.push(`--server=${httpUrl}`, `--server-grpc=${String(server.line.grpc)}`, '--http-listen=127.0.0.1:0', '--admin-listen=127.0.0.1:0');
  const node = reachableProject(pod.agent).node;
  const wrapped = asIdentity(pod.agent, node, [join(tree.root, 'dist', 'cli', 'main.js'), ...args]);
  const agent = await startCommand(wrapped.command, wrapped.args, tree.root, 'agent listening');
  await waitReady(String(agent.line.admin));

  const socket = String(agent.line.socket);
  const filesDir = localPath('/config-sidecar/files');
  assert.equal(readFileSync(join(filesDir, 'db.env'), 'utf8'), "DB_PASSWORD='pw-1'\nDB_USER='shop'\n");
  for (const path of [join(filesDir, 'db.env'), join(filesDir, 'tls/key.pem'), socket, String(agent.line.tokenFile)]) {
    const st = statSync(path);
    assert.equal(st.uid, pod.agent.uid, path);
    assert.equal(st.gid, fsGroup, `${path} keeps the fsGroup`);
    assert.equal(await canRead(pod.stranger, path), false, `a stranger cannot read ${path}`);
  }
  assert.equal(await canRead(pod.app, join(filesDir, 'db.env')), true, 'the app in the fsGroup reads the files');
  assert.equal(await canUseSocket(pod.app, socket), true);
  assert.equal(await canUseSocket(pod.stranger, socket), false);
  assert.deepEqual(await ownedByRoot(filesDir), []);
  if (readOnly) assert.equal(spawnSync('touch', [join(tree.root, 'x')]).status !== 0, true, 'the tree is read-only even for root');
  else t.diagnostic('read-only bind mount unavailable here: the tree is root-owned and not writable by 65532');

  // A ConfigMap change: the built agent validates it in its child process (compiled, in lite mode) as uid 65532 on the read-only tree.
  const configArg = args.find((a) => a.startsWith('--config='));
  assert.ok(configArg, 'the injected agent has a --config');
  const configFile = configArg.slice('--config='.length);
  const reloaded = nextLogLine(agent.child, (l) => l.msg === 'config reloaded' || l.msg === 'config reload refused; keeping the running config');
  const edited = `${configFile}.edit`;
  writeFileSync(edited, `${readFileSync(configFile, 'utf8')}\nlogLevel: debug\n`, { mode: statSync(configFile).mode & 0o777 });
  chownSync(edited, 0, fsGroup);
  renameSync(edited, configFile);
  assert.equal((await reloaded).msg, 'config reloaded', JSON.stringify(await reloaded));

  for (const child of [agent.child, server.child]) {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});
