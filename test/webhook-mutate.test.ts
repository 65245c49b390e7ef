/**
 * Table tests of `mutate` and its pure parts (annotation table, JSON Pointer
 * escaping, patch builders), called directly without sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ANNOTATIONS, parseInjectionSpec, AnnotationError } from '../src/webhook/annotations.ts';
import { applyPatch, escapePointerToken, PatchBuilder, pointer } from '../src/webhook/json-patch.ts';
import { mutate, MutateError, type MutateStep } from '../src/webhook/mutate.ts';
import type { Pod } from '../src/webhook/pod.ts';
import { parseInjectorSettings } from '../src/webhook/settings.ts';
import { REPO_ROOT } from './helpers/k8s-cli.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- patched pods are inspected freely
type Json = Record<string, any>;

const settings = parseInjectorSettings({});

function pod(annotations: Record<string, string>, spec: Partial<Pod['spec']> = {}): Pod {
  return {
    metadata: { name: 'p', annotations: { 'config-sidecar.io/inject': 'true', 'config-sidecar.io/prefixes': 'production/shop', ...annotations } },
    spec: { containers: [{ name: 'app' }], ...spec },
  };
}

test('JSON Pointer tokens escape ~ and / (RFC 6901)', () => {
  assert.equal(escapePointerToken('config-sidecar.io/status'), 'config-sidecar.io~1status');
  assert.equal(escapePointerToken('a~b/c'), 'a~0b~1c');
  assert.equal(pointer('metadata', 'annotations', 'x/y~z'), '/metadata/annotations/x~1y~0z');
});

test('patch builders create an absent array or map once, then append with /-', () => {
  const b = new PatchBuilder();
  b.append('/spec/volumes', undefined, { name: 'a' }).append('/spec/volumes', undefined, { name: 'b' });
  b.append('/spec/containers/0/env', [], { name: 'E' });
  b.prepend('/spec/initContainers', [{ name: 'x' }], { name: 'first' });
  b.setKey('/metadata/annotations', undefined, 'k/1', 'v').setKey('/metadata/annotations', undefined, 'k~2', 'w');
  assert.deepEqual(b.operations, [
    { op: 'add', path: '/spec/volumes', value: [{ name: 'a' }] },
    { op: 'add', path: '/spec/volumes/-', value: { name: 'b' } },
    { op: 'add', path: '/spec/containers/0/env/-', value: { name: 'E' } },
    { op: 'add', path: '/spec/initContainers/0', value: { name: 'first' } },
    { op: 'add', path: '/metadata/annotations', value: { 'k/1': 'v' } },
    { op: 'add', path: '/metadata/annotations/k~02', value: 'w' },
  ]);
  const doc = applyPatch({ metadata: {}, spec: { containers: [{ env: [] }], initContainers: [{ name: 'x' }] } }, b.operations);
  assert.deepEqual(doc.metadata, { annotations: { 'k/1': 'v', 'k~2': 'w' } });
  assert.deepEqual((doc.spec as { initContainers: unknown[] }).initContainers, [{ name: 'first' }, { name: 'x' }]);
});

const failures: Array<{ name: string; pod: Pod; step: MutateStep; message: RegExp }> = [
  { name: 'inject is not a boolean', pod: pod({ 'config-sidecar.io/inject': 'on' }), step: 'should-inject', message: /config-sidecar\.io\/inject: "on" is not allowed/ },
  { name: 'prefixes missing', pod: { metadata: { annotations: { 'config-sidecar.io/inject': 'true' } }, spec: { containers: [{ name: 'a' }] } }, step: 'defaults', message: /prefixes: is required/ },
  { name: 'a bad prefix', pod: pod({ 'config-sidecar.io/prefixes': 'Production/Shop' }), step: 'defaults', message: /prefixes: "Production\/Shop": The prefix contains the segment "Production"/ },
  { name: 'a bad duration', pod: pod({ 'config-sidecar.io/cache-ttl': '5 minutes' }), step: 'defaults', message: /cache-ttl: "5 minutes" is not a duration; allowed: a duration/ },
  { name: 'a bad port', pod: pod({ 'config-sidecar.io/admin-port': '80' }), step: 'defaults', message: /admin-port: "80" is not a port; allowed: an integer 1024-65535/ },
  { name: 'equal ports', pod: pod({ 'config-sidecar.io/admin-port': '8430' }), step: 'defaults', message: /equals config-sidecar\.io\/http-port/ },
  { name: 'a bad ConfigMap name', pod: pod({ 'config-sidecar.io/config-map': 'Agent_Config' }), step: 'defaults', message: /config-map: "Agent_Config" is not a ConfigMap name/ },
  { name: 'a user-written status', pod: pod({ 'config-sidecar.io/status': 'done' }), step: 'defaults', message: /status: "done" is not a status the injector writes/ },
  { name: 'a cpu request above the limit', pod: pod({ 'config-sidecar.io/cpu-request': '1' }), step: 'defaults', message: /cpu-request: "1" is above config-sidecar\.io\/cpu-limit "200m"/ },
  {
    name: 'a mount path taken by another volume',
    pod: pod({}, { containers: [{ name: 'app', volumeMounts: [{ name: 'mine', mountPath: '/run/config-sidecar/' }] }] }),
    step: 'validate',
    message: /container "app" already mounts volume "mine" at \/run\/config-sidecar\/, where the injector mounts "config-sidecar-run"/,
  },
];

for (const f of failures) {
  test(`mutate refuses ${f.name} at step "${f.step}"`, () => {
    assert.throws(
      () => mutate(f.pod, { settings }),
      (err: unknown) => err instanceof MutateError && err.step === f.step && f.message.test(err.message),
    );
  });
}

test('mutate skips pods that do not opt in, and leaves injected pods unchanged', () => {
  assert.equal(mutate({ spec: { containers: [{ name: 'a' }] } }, { settings }).outcome, 'skipped');
  assert.equal(mutate(pod({ 'config-sidecar.io/inject': 'false' }), { settings }).outcome, 'skipped');
  const first = mutate(pod({}), { settings });
  assert.equal(first.outcome, 'patched');
  const injected = applyPatch(pod({}), first.outcome === 'patched' ? first.patch : []);
  assert.deepEqual(mutate(injected, { settings }), { outcome: 'unchanged', reason: 'already injected with the current annotations and settings' });
});

test('the native sidecar is first, restartPolicy Always, with probes, bounded resources and a short-lived audience-bound token', () => {
  const result = mutate(pod({}, { initContainers: [{ name: 'migrate' }] }), { settings });
  assert.equal(result.outcome, 'patched');
  const out = applyPatch(pod({}, { initContainers: [{ name: 'migrate' }] }), result.outcome === 'patched' ? result.patch : []);
  const [sidecar, migrate] = out.spec.initContainers as Json[];
  assert.equal(sidecar?.name, 'config-sidecar');
  assert.equal(migrate?.name, 'migrate');
  assert.equal(sidecar?.restartPolicy, 'Always');
  assert.equal(sidecar?.startupProbe.httpGet.path, '/readyz');
  assert.equal(sidecar?.livenessProbe.httpGet.path, '/healthz');
  assert.ok(sidecar?.args.includes('--admin-listen=0.0.0.0:8431'));
  assert.deepEqual(sidecar?.resources, { requests: { cpu: '50m', memory: '128Mi' }, limits: { cpu: '200m', memory: '256Mi' } });
  const token = (out.spec.volumes as Json[]).find((v) => v.name === 'config-sidecar-token');
  assert.deepEqual(token?.projected.sources[0], { serviceAccountToken: { audience: 'config-sidecar', expirationSeconds: 600, path: 'token' } });
  assert.equal((out.spec.securityContext as { fsGroup: number }).fsGroup, 65532);
});

test('every annotation in the table is documented in docs/KUBERNETES.md', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs', 'KUBERNETES.md'), 'utf8');
  for (const a of Object.values(ANNOTATIONS)) assert.ok(doc.includes(`\`${a.key}\``), `${a.key} is missing from docs/KUBERNETES.md`);
});

test('parseInjectionSpec resolves defaults into a frozen typed spec', () => {
  const spec = parseInjectionSpec({ 'config-sidecar.io/prefixes': 'a/b/, c', 'config-sidecar.io/prefetch': 'a/b/x' }, { image: 'img:1' });
  assert.ok(Object.isFrozen(spec));
  assert.deepEqual(spec.prefixes, ['a/b', 'c']);
  assert.equal(spec.image, 'img:1');
  assert.equal(spec.configMapKey, 'agent.yaml');
  assert.throws(() => parseInjectionSpec({ 'config-sidecar.io/prefixes': '' }, { image: 'x' }), AnnotationError);
});

test('an injected pod whose annotations or settings changed is brought up to date, then left alone', () => {
  const first = mutate(pod({ 'config-sidecar.io/config-map': 'agent' }), { settings });
  const injected = applyPatch(pod({ 'config-sidecar.io/config-map': 'agent' }), first.outcome === 'patched' ? first.patch : []);
  // The API server adds defaults; they do not make the sidecar stale.
  const sidecar = (injected.spec.initContainers as Json[])[0] as Json;
  sidecar.terminationMessagePath = '/dev/termination-log';
  sidecar.startupProbe.successThreshold = 1;
  assert.equal(mutate(injected, { settings }).outcome, 'unchanged');

  const edited = structuredClone(injected);
  delete (edited.metadata?.annotations as Record<string, string>)['config-sidecar.io/config-map'];
  (edited.metadata?.annotations as Record<string, string>)['config-sidecar.io/prefixes'] = 'production/shop,shared/tls';
  const update = mutate(edited, { settings });
  assert.equal(update.outcome, 'patched');
  const ops = update.outcome === 'patched' ? update.patch : [];
  assert.deepEqual(ops.map((o) => `${o.op} ${o.path}`), ['replace /spec/initContainers/0', 'remove /spec/volumes/3']);
  const updated = applyPatch(edited, ops);
  const args = ((updated.spec.initContainers as Json[])[0] as Json).args as string[];
  assert.ok(args.includes('--prefix=shared/tls'));
  assert.ok(!args.some((a) => a.startsWith('--config=')));
  assert.ok(!(updated.spec.volumes as Json[]).some((v) => v.name === 'config-sidecar-config'));
  assert.equal(mutate(updated, { settings }).outcome, 'unchanged');

  const newImage = mutate(updated, { settings: parseInjectorSettings({ sidecarImage: 'registry.example/config-sidecar:0.2.0' }) });
  assert.equal(newImage.outcome, 'patched', 'a webhook upgrade re-images injected pods it is asked about');
});

test('config-sidecar.io/app-health-url becomes the agent\'s --app-health-url; a URL off loopback is refused, naming the annotation', () => {
  const result = mutate(pod({ 'config-sidecar.io/app-health-url': 'http://127.0.0.1:8080/healthz' }), { settings });
  assert.equal(result.outcome, 'patched');
  const out = applyPatch(pod({ 'config-sidecar.io/app-health-url': 'http://127.0.0.1:8080/healthz' }), result.outcome === 'patched' ? result.patch : []);
  const [sidecar] = out.spec.initContainers as Json[];
  assert.ok(sidecar?.args.includes('--app-health-url=http://127.0.0.1:8080/healthz'));
  assert.throws(
    () => parseInjectionSpec({ 'config-sidecar.io/prefixes': 'a', 'config-sidecar.io/app-health-url': 'http://10.0.0.7/healthz' }, { image: 'x' }),
    (err: unknown) => err instanceof AnnotationError && err.annotation === 'config-sidecar.io/app-health-url' && /loopback only/.test(err.message),
  );
});

test('warm restart: the agent alone mounts a memory-backed snapshot volume (--snapshot-dir); config-sidecar.io/snapshot "false" leaves it out, and re-injection removes it', () => {
  const injected = applyPatch(pod({}), ((r) => (r.outcome === 'patched' ? r.patch : []))(mutate(pod({}), { settings })));
  const [sidecar] = injected.spec.initContainers as Json[];
  assert.ok(sidecar?.args.includes('--snapshot-dir=/config-sidecar/snapshot'));
  assert.deepEqual(
    (sidecar?.volumeMounts as Json[]).find((m) => m.name === 'config-sidecar-snapshot'),
    { name: 'config-sidecar-snapshot', mountPath: '/config-sidecar/snapshot' },
  );
  assert.deepEqual((injected.spec.volumes as Json[]).find((v) => v.name === 'config-sidecar-snapshot'), { name: 'config-sidecar-snapshot', emptyDir: { medium: 'Memory', sizeLimit: '32Mi' } });
  for (const app of injected.spec.containers as Json[]) {
    assert.ok(!(app.volumeMounts as Json[]).some((m) => m.name === 'config-sidecar-snapshot'), `${String(app.name)} never sees the snapshot or its key`);
  }

  const off = structuredClone(injected);
  (off.metadata?.annotations as Record<string, string>)['config-sidecar.io/snapshot'] = 'false';
  const update = mutate(off, { settings });
  const updated = applyPatch(off, update.outcome === 'patched' ? update.patch : []);
  assert.ok(!((updated.spec.initContainers as Json[])[0]?.args as string[]).some((a) => a.startsWith('--snapshot-dir')));
  assert.ok(!(updated.spec.volumes as Json[]).some((v) => v.name === 'config-sidecar-snapshot'));
  assert.throws(() => parseInjectionSpec({ 'config-sidecar.io/prefixes': 'a', 'config-sidecar.io/snapshot': 'yes' }, { image: 'x' }), /snapshot: "yes" is not allowed; allowed: "true" or "false"/);
});
