/**
 * The client as an application installs it: `npm pack` of the workspace
 * (src/client), installed into an empty project, pulls at most 3 packages and
 * reads a value from a real agent, as ESM and as CommonJS, on this Node (24)
 * and on the machine's Node 20 when there is one; its types check from both
 * module systems. The packed code imports nothing from outside its folder.
 * Where the pod harness works the apps run as the app container's user (uid
 * 1000 in the pod's fsGroup, no capabilities) against an agent running as
 * 65532, as in a pod.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { defaultPod, putItem, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { asIdentity, makePodDir, reachableProject } from './helpers/pod-harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NPM_ENV = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };

let server: ServerProcess;
let agent: AgentProcess;
let project: string;
const pod = defaultPod();

/** The machine's Node 20, if any (the system node; this process runs on the project's Node 24). */
function findNode20(): string | undefined {
  const candidates = ['/usr/bin/node', '/usr/local/bin/node', '/bin/node'];
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    try {
      if (execFileSync(candidate, ['--version'], { encoding: 'utf8' }).trim().startsWith('v20.')) return candidate;
    } catch {
      // not runnable: try the next
    }
  }
  return undefined;
}

const ESM_APP = `
import { createClient, ConfigSidecarError } from '@config-sidecar/client';
const client = createClient();
const item = await client.get('production/pkg/greeting');
let missing = '';
try { await client.get('production/pkg/missing'); } catch (err) { missing = err instanceof ConfigSidecarError ? err.code : String(err); }
await client.close();
// Whether importing the client made node compile its bundled fetch (an ESM import of node:http does, on Node 22+).
const bundledFetch = process.moduleLoadList.includes('NativeModule internal/deps/undici/undici');
process.stdout.write(JSON.stringify({ value: item.value, version: item.version, missing, node: process.version, uid: process.getuid(), bundledFetch }));
`;

const CJS_APP = `
const { createClient } = require('@config-sidecar/client');
(async () => {
  const client = createClient({ socketPath: process.env.AGENT_SOCKET });
  const item = await client.get('production/pkg/settings');
  await client.close();
  process.stdout.write(JSON.stringify({ value: item.value, node: process.version }));
})();
`;

const TYPES_ESM = `
import { createClient, type Item } from '@config-sidecar/client';
const client = createClient({ socketPath: '/tmp/x.sock' });
export const read: Promise<Item<{ rps: number }>> = client.get<{ rps: number }>('production/pkg/settings');
`;

const TYPES_CJS = `
import client = require('@config-sidecar/client');
export const c: client.ConfigSidecarClient = client.createClient();
`;

before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/pkg/greeting', { kind: 'secret', value: 'hello-from-the-agent' });
  await putItem(server, 'production/pkg/settings', { kind: 'config', value: { rps: 7 } });
  agent = await startAgentProcess(server, { prefixes: ['production/pkg'] });

  project = pod ? await makePodDir('cs-client-pkg-') : await makeTempDir('cs-client-pkg-');
  // prepack builds dist/ (ESM, CommonJS, types) from the workspace's own tsconfig files.
  execFileSync('npm', ['pack', '-w', 'src/client', '--pack-destination', project, '--loglevel=error'], { cwd: ROOT, env: NPM_ENV, stdio: 'pipe' });
  const tarball = readdirSync(project).find((f) => f.endsWith('.tgz'));
  assert.ok(tarball, 'npm pack wrote a tarball');
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  execFileSync('npm', ['install', `./${tarball}`, '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], { cwd: project, env: NPM_ENV, stdio: 'pipe' });
  writeFileSync(join(project, 'app.mjs'), ESM_APP);
  writeFileSync(join(project, 'app.cjs'), CJS_APP);
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  await removeDir(agent?.dir ?? '');
  await removeDir(server?.dataDir ?? '');
  await removeDir(project ?? '');
});

test('the packed client installs alone: at most 3 packages, no import from outside its folder', () => {
  const lock = JSON.parse(readFileSync(join(project, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
  const installed = Object.keys(lock.packages).filter((p) => p !== '');
  assert.ok(installed.length <= 3, `installed: ${installed.join(', ')}`);
  const dist = join(project, 'node_modules', '@config-sidecar', 'client', 'dist');
  for (const file of readdirSync(dist, { recursive: true }).map(String).filter((f) => f.endsWith('.js'))) {
    const code = readFileSync(join(dist, file), 'utf8');
    for (const [, spec] of code.matchAll(/(?:from |require\()['"]([^'"]+)['"]/g)) {
      assert.ok(spec?.startsWith('node:') || spec?.startsWith('./'), `${file} imports ${spec}`);
    }
  }
});

for (const runtime of ['node24', 'node20'] as const) {
  test(`ESM and CommonJS apps read values through the agent on ${runtime}`, (t) => {
    const node = runtime === 'node24' ? (pod ? reachableProject(pod.app).node : process.execPath) : findNode20();
    if (!node) {
      t.skip('no Node 20 on this machine (looked for /usr/bin/node, /usr/local/bin/node, /bin/node)');
      return;
    }
    const env = { PATH: `${dirname(node)}:/usr/bin:/bin`, CONFIG_SIDECAR_SOCKET: agent.socketPath, AGENT_SOCKET: agent.socketPath };
    const run = (script: string): string => {
      const { command, args } = pod ? asIdentity(pod.app, node, [script]) : { command: node, args: [script] };
      return execFileSync(command, args, { cwd: project, env, encoding: 'utf8' });
    };
    const esm = JSON.parse(run('app.mjs')) as Record<string, unknown>;
    assert.equal(esm.value, 'hello-from-the-agent');
    assert.equal(esm.missing, 'not_found');
    if (pod) assert.equal(esm.uid, pod.app.uid, "the app's own user, in the pod's fsGroup");
    assert.equal(typeof esm.version, 'number');
    assert.equal(esm.bundledFetch, false, "the client's import of node:http compiled node's bundled fetch in the app");
    const cjs = JSON.parse(run('app.cjs')) as Record<string, unknown>;
    assert.deepEqual(cjs.value, { rps: 7 });
    assert.match(String(esm.node), runtime === 'node24' ? /^v24\./ : /^v20\./);
  });
}

test('the packed types check from ESM and CommonJS consumers', () => {
  writeFileSync(join(project, 'types-esm.mts'), TYPES_ESM);
  writeFileSync(join(project, 'types-cjs.cts'), TYPES_CJS);
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const args = [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck'];
  args.push('--typeRoots', join(ROOT, 'node_modules', '@types'), '--types', 'node', 'types-esm.mts', 'types-cjs.cts');
  try {
    execFileSync(process.execPath, args, { cwd: project, encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    assert.fail(`tsc: ${(err as { stdout: string }).stdout}`);
  }
});
