/**
 * The example Job as Kubernetes would run it, without Kubernetes: the pod the
 * dev webhook injects is taken apart and its containers run as real
 * processes against a real server, with the pod's volume paths mapped to a
 * temp dir. The sidecar runs with exactly the injected command line; once its
 * /readyz passes (the startupProbe's check), the init container's file read
 * and the main container's `config-sidecar get` through CONFIG_SIDECAR_SOCKET
 * both see the value. Through the pod harness (where it works: root), each
 * container runs as its securityContext resolves (uid, gid, the pod's fsGroup;
 * no capabilities) and the emptyDirs are made as the kubelet makes them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CLI_MAIN, REPO_ROOT, runCli } from './helpers/k8s-cli.ts';
import { kustomize, parseYamlObjects } from './helpers/k8s-schema.ts';
import { podSpecsIn } from './helpers/k8s-pss.ts';
import { waitReady } from './helpers/agent-process.ts';
import { asIdentity, canRead, identityOf, makePodDir, makeVolume, podSupport, reachableProject, runAs, type PodIdentity, type Volume } from './helpers/pod-harness.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kubernetes objects are walked freely
type Json = Record<string, any>;

let dir: string;
const children: ChildProcess[] = [];
const asPod = podSupport().ok;
const memoryVolumes: Volume[] = [];

before(async () => {
  dir = asPod ? await makePodDir('pod-sim-') : mkdtempSync(join(tmpdir(), 'pod-sim-'));
});

after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const v of memoryVolumes) await v.unmount();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts the CLI (as `as` through the pod harness when given) and waits for a log line. */
function start(args: string[], env: NodeJS.ProcessEnv, msg: string, as?: PodIdentity): Promise<{ child: ChildProcess; line: Json }> {
  let command = process.execPath;
  let argv = [CLI_MAIN, ...args];
  let cwd = REPO_ROOT;
  if (as) {
    const project = reachableProject(as);
    ({ command, args: argv } = asIdentity(as, project.node, [project.cli, ...args]));
    cwd = project.root;
  }
  const child = spawn(command, argv, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => reject(new Error(`no "${msg}" within 20 s; stderr: ${stderr}`)), 20_000);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buffer += d;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const text of lines) {
        if (!text.startsWith('{')) continue;
        const line = JSON.parse(text) as Json;
        if (line.msg === msg) {
          clearTimeout(timer);
          resolve({ child, line });
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before "${msg}"; stderr: ${stderr}`));
    });
  });
}

function httpCall(url: string, method = 'GET', headers: Record<string, string> = {}, body?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('the injected example Job: sidecar with its injected flags, then the file read and the socket read succeed', async () => {
  // 1. The pod as the dev cluster's webhook injects it.
  const dev = kustomize(join(REPO_ROOT, 'manifests', 'overlays', 'dev'));
  const webhook = dev.find((o) => o.kind === 'Deployment' && o.metadata.name === 'config-sidecar-webhook') as Json;
  const webhookEnv = Object.fromEntries((webhook.spec.template.spec.containers[0].env as Json[]).map((e) => [e.name, String(e.value)]));
  const example = kustomize(join(REPO_ROOT, 'manifests', 'example'));
  const injected = await runCli(['inject', '-f', '-'], example.map((o) => stringify(o)).join('---\n'), webhookEnv);
  assert.equal(injected.code, 0, injected.stderr);
  const objects = parseYamlObjects(injected.stdout);
  const job = podSpecsIn(objects).find((p) => p.where.startsWith('Job'));
  assert.ok(job);
  const [sidecar, readFile] = job.spec.initContainers as Json[];
  const report = (job.spec.containers as Json[])[0] as Json;
  assert.equal(sidecar?.name, 'config-sidecar');
  assert.equal(readFile?.name, 'read-file');

  // 2. The pod's volumes: emptyDirs as the kubelet makes them for the pod's fsGroup (root:fsGroup 2777, setgid;
  //    medium Memory as tmpfs), the others as directories the kubelet fills below.
  const fsGroup = job.spec.securityContext?.fsGroup as number | undefined;
  assert.ok(fsGroup !== undefined, 'the injected pod has an fsGroup');
  const sidecarUser = identityOf('sidecar', sidecar, job.spec);
  const readFileUser = identityOf('read-file', readFile, job.spec);
  const reportUser = identityOf('report', report, job.spec);
  const volumes: Record<string, string> = {};
  for (const v of job.spec.volumes as Json[]) {
    volumes[v.name as string] = join(dir, v.name as string);
    if (asPod && v.emptyDir) memoryVolumes.push(await makeVolume(volumes[v.name as string] as string, fsGroup, v.emptyDir.medium === 'Memory' ? { medium: 'Memory', sizeBytes: 4 * 1024 * 1024 } : {}));
    else mkdirSync(volumes[v.name as string] as string);
  }
  const mapPath = (container: Json, path: string): string => {
    for (const m of (container.volumeMounts ?? []) as Json[]) {
      if (path === m.mountPath || path.startsWith(`${m.mountPath}/`)) return join(volumes[m.name as string] as string, path.slice(String(m.mountPath).length));
    }
    return path;
  };

  // 3. A real server with the example's values.
  const rootToken = randomBytes(24).toString('hex');
  const server = await start(
    ['server', `--data-dir=${join(dir, 'server')}`, '--http-listen=127.0.0.1:0', '--grpc-listen=127.0.0.1:0', '--admin-listen=127.0.0.1:0'],
    { CONFIG_SIDECAR_KEK: randomBytes(32).toString('base64'), CONFIG_SIDECAR_ROOT_TOKEN: rootToken },
    'server listening',
  );
  const auth = { authorization: `Bearer ${rootToken}`, 'content-type': 'application/json' };
  for (const [name, body] of [
    ['greeting', { kind: 'config', value: 'hello from the shop' }],
    ['db-password', { kind: 'secret', value: 's3cret value' }],
  ] as const) {
    assert.equal(await httpCall(`${String(server.line.http)}/v1/items/example/shop/${name}?env=base`, 'PUT', auth, JSON.stringify(body)), 200);
  }

  // 4. What the kubelet would project: the token and the ConfigMap.
  //    With an fsGroup both are root:fsGroup, readable through the group.
  const tokenPath = join(volumes['config-sidecar-token'] as string, 'token');
  writeFileSync(tokenPath, rootToken, { mode: 0o440 });
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'shop-agent') as Json;
  const configPath = join(volumes['config-sidecar-config'] as string, 'agent.yaml');
  writeFileSync(configPath, cm.data['agent.yaml'] as string, { mode: 0o440 });
  if (asPod) for (const path of [tokenPath, configPath]) chownSync(path, 0, fsGroup);

  // 5. The sidecar with its injected arguments; only addresses and paths are mapped.
  const args = (sidecar.args as string[]).map((arg) => {
    const [flag, value] = arg.split(/=(.*)/s) as [string, string | undefined];
    if (flag === '--server') return `--server=${String(server.line.http)}`;
    if (flag === '--server-grpc') return `--server-grpc=${String(server.line.grpc)}`;
    if (flag === '--http-listen' || flag === '--admin-listen') return `${flag}=127.0.0.1:0`; // tests share the host's ports
    return value?.startsWith('/') ? `${flag}=${mapPath(sidecar, value)}` : arg;
  });
  const agent = await start(args, {}, 'agent listening', asPod ? sidecarUser : undefined);
  // The startupProbe's check, bounded like its failureThreshold.
  await waitReady(String(agent.line.admin));

  // 6. The init container reads the rendered file.
  const filePath = mapPath(readFile, (readFile.command as string[])[1] as string);
  if (asPod) assert.equal(await canRead(readFileUser, filePath), true, `the init container (uid ${readFileUser.uid}, groups ${readFileUser.groups.join(',')}) reads the file`);
  const rendered = readFileSync(filePath, 'utf8');
  assert.match(rendered, /hello from the shop/);
  assert.match(rendered, /s3cret value/);

  // 7. The main container reads through the socket its environment names.
  const socketEnv = (report.env as Json[]).find((e) => e.name === 'CONFIG_SIDECAR_SOCKET')?.value as string;
  const socketVar = { CONFIG_SIDECAR_SOCKET: mapPath(report, socketEnv) };
  const project = asPod ? reachableProject(reportUser) : undefined;
  const got = project
    ? await runAs(reportUser, project.node, [project.cli, ...(report.args as string[])], { PATH: process.env.PATH ?? '', ...socketVar })
    : await runCli(report.args as string[], '', socketVar);
  assert.equal(got.code, 0, got.stderr);
  assert.match(got.stdout, /hello from the shop/);

  for (const child of [agent.child, server.child]) {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});
