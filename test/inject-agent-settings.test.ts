/**
 * The contract between the injector and the agent: the command line the
 * injector writes into every sidecar (golden outputs and the example app as
 * the dev webhook would inject it), merged with the agent config from its
 * ConfigMap, passes the agent's own settings schema and files schema. And the
 * env twins the manifests set on the webhook are the ones the CLI reads.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml, stringify } from 'yaml';
import { resolveAgentSettings } from '../src/agent/agent-settings.ts';
import { parseFileSpecs } from '../src/agent/files/file-spec-schema.ts';
import { parseAuthFile } from '../src/server/auth/auth-file.ts';
import { jwtBindingKey } from '../src/server/auth/identity.ts';
import { goldenCases, REPO_ROOT, runCli } from './helpers/k8s-cli.ts';
import { kustomize, parseYamlObjects } from './helpers/k8s-schema.ts';
import { podSpecsIn } from './helpers/k8s-pss.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kubernetes objects are walked freely
type Json = Record<string, any>;

const REPEATABLE = new Set(['prefix', 'prefetch']);

/** `--cache-ttl=5m` → `{ cacheTtl: '5m' }`; repeatable flags collect; a bare flag is true. */
function flagsOf(args: readonly string[]): Record<string, unknown> {
  assert.equal(args[0], 'agent');
  const flags: Record<string, unknown> = {};
  for (const arg of args.slice(1)) {
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    assert.ok(match, `unexpected argument ${arg}`);
    const key = (match[1] as string).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const value = match[2] ?? true;
    if (REPEATABLE.has(key)) flags[key] = [...((flags[key] as string[] | undefined) ?? []), value];
    else flags[key] = value;
  }
  return flags;
}

let dev: Json[];
let sources: Array<{ source: string; objects: Json[] }>;

before(async () => {
  dev = kustomize(join(REPO_ROOT, 'manifests', 'overlays', 'dev'));
  const webhook = dev.find((o) => o.kind === 'Deployment' && o.metadata.name === 'config-sidecar-webhook') as Json;
  const env = Object.fromEntries((webhook.spec.template.spec.containers[0].env as Json[]).map((e) => [e.name, String(e.value)]));
  const example = kustomize(join(REPO_ROOT, 'manifests', 'example'));
  // The real CLI with the webhook Deployment's environment: proves the env twin names too.
  const injected = await runCli(['inject', '-f', '-'], example.map((o) => stringify(o)).join('---\n'), env);
  assert.equal(injected.code, 0, injected.stderr);
  sources = [
    { source: 'example (dev webhook env)', objects: parseYamlObjects(injected.stdout) },
    ...goldenCases().map((c) => ({ source: c.name, objects: parseYamlObjects(readFileSync(c.expectedPath, 'utf8')) })),
  ];
});

test('the dev webhook environment reaches the injected agents (plaintext, no CA, insecure)', () => {
  const pods = podSpecsIn(sources[0]?.objects ?? []);
  assert.equal(pods.length, 2);
  for (const { spec } of pods) {
    const args = (spec.initContainers as Json[])[0]?.args as string[];
    assert.ok(args.includes('--insecure'));
    assert.ok(args.includes('--server=http://config-sidecar-server.config-sidecar.svc:8420'));
    assert.ok(!args.some((a) => a.startsWith('--server-ca')));
  }
});

test("every injected sidecar's command line and agent config pass the agent's own settings and files schemas", () => {
  let checked = 0;
  for (const { source, objects } of sources) {
    const configMaps = new Map(objects.filter((o) => o.kind === 'ConfigMap').map((o) => [o.metadata.name as string, o.data as Record<string, string>]));
    for (const { where, metadata, spec } of podSpecsIn(objects)) {
      const sidecar = ((spec.initContainers ?? []) as Json[]).find((c) => c.name === 'config-sidecar');
      if (!sidecar) continue;
      const flags = flagsOf(sidecar.args as string[]);
      let file: Record<string, unknown> = {};
      const cm = metadata.annotations?.['config-sidecar.io/config-map'] as string | undefined;
      if (cm && configMaps.has(cm)) file = parseYaml((configMaps.get(cm) as Record<string, string>)['agent.yaml'] as string) as Record<string, unknown>;
      const settings = resolveAgentSettings(flags, file);
      assert.ok(settings.prefix.length > 0, `${source} ${where}`);
      assert.equal(settings.adminListen.host, '0.0.0.0', 'the kubelet probes the admin port from outside the pod');
      assert.equal(settings.httpListen === 'off' ? 'off' : settings.httpListen.host, '127.0.0.1');
      if (file.files) assert.ok(parseFileSpecs(file.files).length > 0);
      checked += 1;
    }
  }
  assert.ok(checked >= 9, `checked ${checked} sidecars`);
});

test("the server's auth policy ConfigMap parses with the server's own parser and grants the example agent its prefix", () => {
  const cm = dev.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'config-sidecar-auth') as Json;
  const policy = parseAuthFile(cm.data['auth.yaml'] as string);
  assert.deepEqual(policy.bindings.get(jwtBindingKey('system:serviceaccount:config-sidecar-example:shop')), ['example-shop-reader']);
  assert.deepEqual(policy.roles.get('example-shop-reader'), [{ prefixes: ['example/shop'], actions: ['read', 'list'] }]);
});

test('every flag and CONFIG_SIDECAR_* variable in the manifests is one the command accepts', async () => {
  const helpCache = new Map<string, string>();
  const help = async (command: string) => {
    if (!helpCache.has(command)) helpCache.set(command, (await runCli([command, '--help'])).stdout.replace(/\s+/g, ' '));
    return helpCache.get(command) as string;
  };
  const prod = kustomize(join(REPO_ROOT, 'manifests', 'overlays', 'prod'));
  for (const { where, spec } of podSpecsIn([...dev, ...prod])) {
    for (const c of spec.containers as Json[]) {
      if (!String(c.image).includes('config-sidecar')) continue;
      const [command, ...args] = c.args as string[];
      const text = await help(command as string);
      for (const arg of args) {
        const flag = /^--[a-z-]+/.exec(arg)?.[0];
        if (flag) assert.match(text, new RegExp(`${flag}\\b`), `${where}: ${command} has no ${flag}`);
      }
      for (const e of (c.env ?? []) as Json[]) {
        // A flag's twin shows as "env: NAME"; a secret read only from the environment is named in the help text.
        if (String(e.name).startsWith('CONFIG_SIDECAR_')) assert.match(text, new RegExp(`\\b${e.name}\\b`), `${where}: ${command} reads no ${e.name}`);
      }
    }
  }
});
