/**
 * Every object under manifests/ (each overlay rendered with `kubectl
 * kustomize`) and every injected workload (the golden outputs and the example
 * app injected offline) validates against the Kubernetes 1.32 OpenAPI schemas
 * from the pinned `kubernetes-models`, and every pod spec meets the
 * restricted Pod Security Standard. Plus the product's own rules: read-only
 * root filesystems, probes and resources everywhere, the sidecar's default
 * resources within 64–256 MiB and 50–200m, Secrets only by reference.
 */
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { goldenCases, REPO_ROOT } from './helpers/k8s-cli.ts';
import { kustomize, parseYamlObjects, validateObject } from './helpers/k8s-schema.ts';
import { podSpecsIn, restrictedViolations } from './helpers/k8s-pss.ts';
import { injectYaml } from '../src/webhook/workloads.ts';
import { parseInjectorSettings } from '../src/webhook/settings.ts';
import { parseQuantity } from '../src/webhook/quantity.ts';
import { stringify } from 'yaml';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kubernetes objects are walked freely in these checks
type Json = Record<string, any>;

const KUSTOMIZATIONS = ['overlays/dev', 'overlays/prod', 'base', 'example'] as const;
const rendered = new Map<string, Json[]>();
let injected: Array<{ source: string; objects: Json[] }> = [];

before(() => {
  // Rendered once for the whole file: kubectl is the slow part.
  for (const k of KUSTOMIZATIONS) rendered.set(k, kustomize(join(REPO_ROOT, 'manifests', k)));
  const devWebhook = rendered.get('overlays/dev')?.find((o) => o.kind === 'Deployment' && o.metadata.name === 'config-sidecar-webhook');
  const env = Object.fromEntries((devWebhook?.spec.template.spec.containers[0].env as Json[]).map((e) => [e.name, e.value]));
  // The example app as the dev cluster's webhook would inject it.
  const devSettings = parseInjectorSettings({
    sidecarImage: env.CONFIG_SIDECAR_SIDECAR_IMAGE,
    agentServer: env.CONFIG_SIDECAR_AGENT_SERVER,
    agentServerGrpc: env.CONFIG_SIDECAR_AGENT_SERVER_GRPC,
    agentServerCaConfigMap: env.CONFIG_SIDECAR_AGENT_SERVER_CA_CONFIG_MAP,
    agentInsecure: env.CONFIG_SIDECAR_AGENT_INSECURE,
    tokenAudience: env.CONFIG_SIDECAR_TOKEN_AUDIENCE,
  });
  const example = rendered.get('example') as Json[];
  injected = [
    { source: 'example app injected with the dev webhook settings', objects: parseYamlObjects(injectYaml(example.map((o) => stringify(o)).join('---\n'), devSettings)) },
    ...goldenCases().map((c) => ({ source: `golden ${c.name}`, objects: parseYamlObjects(readFileSync(c.expectedPath, 'utf8')) })),
  ];
});

test('each overlay renders with kubectl kustomize', () => {
  for (const k of KUSTOMIZATIONS) assert.ok((rendered.get(k)?.length ?? 0) > 0, k);
  const kinds = (k: string) => new Set(rendered.get(k)?.map((o) => o.kind));
  for (const kind of ['Deployment', 'Service', 'NetworkPolicy', 'ServiceAccount', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'PersistentVolumeClaim']) {
    assert.ok(kinds('overlays/dev').has(kind), `dev has a ${kind}`);
  }
  assert.ok(!kinds('overlays/dev').has('PodDisruptionBudget'), 'dev has no PDB that would block drains');
  assert.ok(kinds('overlays/prod').has('PodDisruptionBudget'));
  assert.ok(!kinds('overlays/prod').has('PersistentVolumeClaim'));
  const devServer = rendered.get('overlays/dev')?.find((o) => o.kind === 'Deployment' && o.metadata.name === 'config-sidecar-server') as Json;
  assert.equal(devServer.spec.replicas, 1);
  assert.equal(devServer.spec.strategy.type, 'Recreate', 'SQLite has one writer: never two pods in a rollout');
  const data = (devServer.spec.template.spec.volumes as Json[]).find((v) => v.name === 'data');
  assert.equal(data?.persistentVolumeClaim?.claimName, 'config-sidecar-server-data');
  assert.ok(rendered.get('overlays/dev')?.some((o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === 'config-sidecar-server-data'));
});

test('every rendered object validates against the Kubernetes 1.32 schemas (kubernetes-models, pinned)', async () => {
  const models = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', 'kubernetes-models', 'package.json'), 'utf8')) as { version: string };
  assert.match(models.version, /^4\.5\./, 'kubernetes-models 4.5.x holds the 1.32 schemas these tests rely on');
  const problems: string[] = [];
  for (const [k, objects] of rendered) for (const obj of objects) problems.push(...(await validateObject(obj)).map((p) => `${k}: ${p}`));
  assert.deepEqual(problems, []);
});

test('the schema validator is not a rubber stamp: a wrong type is reported', async () => {
  const bad = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { replicas: 'two', selector: {}, template: { spec: { containers: [{ name: 'a', image: 'x' }] } } } };
  assert.match((await validateObject(bad)).join('\n'), /replicas must be integer/);
  const sidecar = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { initContainers: [{ name: 's', image: 'x', restartPolicy: 7 }], containers: [{ name: 'a', image: 'x' }] } };
  assert.match((await validateObject(sidecar)).join('\n'), /restartPolicy must be string/, 'init containers know restartPolicy (native sidecars)');
});

test('every injected workload validates against the Kubernetes 1.32 schemas', async () => {
  const problems: string[] = [];
  for (const { source, objects } of injected) for (const obj of objects) problems.push(...(await validateObject(obj)).map((p) => `${source}: ${p}`));
  assert.deepEqual(problems, []);
});

test('every pod spec in the rendered manifests meets the restricted Pod Security Standard', () => {
  const pods = [...rendered.values()].flatMap((objects) => podSpecsIn(objects));
  assert.ok(pods.length >= 4);
  assert.deepEqual(pods.flatMap((p) => restrictedViolations(p.spec, p.where)), []);
});

test('every pod spec in the injected output meets the restricted Pod Security Standard', () => {
  const pods = injected.flatMap(({ source, objects }) => podSpecsIn(objects).map((p) => ({ ...p, where: `${source}: ${p.where}` })));
  assert.ok(pods.length >= 8);
  assert.deepEqual(pods.flatMap((p) => restrictedViolations(p.spec, p.where)), []);
});

test('the restricted checks catch what they claim to', () => {
  const spec = {
    hostNetwork: true,
    volumes: [{ name: 'h', hostPath: { path: '/' } }],
    containers: [{ name: 'a', securityContext: { privileged: true, capabilities: { add: ['SYS_ADMIN'] } }, ports: [{ containerPort: 80, hostPort: 80 }] }],
  };
  const found = restrictedViolations(spec, 'pod').join('\n');
  for (const expected of [/hostNetwork/, /hostPath/, /privileged/, /allowPrivilegeEscalation/, /runAsNonRoot/, /seccompProfile/, /drop must include ALL/, /SYS_ADMIN/, /hostPort/]) {
    assert.match(found, expected);
  }
});

test('manifests: read-only root filesystems, probes on long-running servers, resources on every container', () => {
  for (const [k, objects] of rendered) {
    for (const { where, spec } of podSpecsIn(objects)) {
      for (const c of [...(spec.initContainers ?? []), ...spec.containers] as Json[]) {
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${k} ${where} ${c.name}: readOnlyRootFilesystem`);
        assert.ok(c.resources?.limits?.memory, `${k} ${where} ${c.name}: a memory limit`);
      }
    }
    for (const d of objects.filter((o) => o.kind === 'Deployment' && o.metadata.namespace === 'config-sidecar')) {
      const c = d.spec.template.spec.containers[0] as Json;
      assert.ok(c.livenessProbe && c.readinessProbe, `${k} ${d.metadata.name}: liveness and readiness probes`);
    }
  }
});

test('secrets are referenced, never embedded: no Secret objects and no secret-looking literal env values', () => {
  for (const [k, objects] of rendered) {
    assert.ok(!objects.some((o) => o.kind === 'Secret'), `${k} has no Secret object`);
    for (const { where, spec } of podSpecsIn(objects)) {
      for (const c of spec.containers as Json[]) {
        for (const e of (c.env ?? []) as Json[]) {
          if (/KEK|TOKEN$|PASSWORD|DATABASE_URL/.test(e.name)) assert.ok(e.valueFrom && !('value' in e), `${k} ${where}: ${e.name} must come from a Secret reference`);
        }
      }
    }
  }
  const prod = rendered.get('overlays/prod') as Json[];
  const server = prod.find((o) => o.kind === 'Deployment' && o.metadata.name === 'config-sidecar-server') as Json;
  const env = server.spec.template.spec.containers[0].env as Json[];
  assert.deepEqual(env.find((e) => e.name === 'CONFIG_SIDECAR_DATABASE_URL')?.valueFrom, { secretKeyRef: { name: 'config-sidecar-postgres', key: 'url' } });
  assert.ok(server.spec.replicas >= 2);
  assert.equal((server.spec.template.spec.volumes as Json[]).find((v) => v.name === 'kek')?.secret.secretName, 'config-sidecar-kek');
});

test('the MutatingWebhookConfiguration is safe for the cluster', () => {
  for (const k of ['overlays/dev', 'overlays/prod']) {
    const mwc = rendered.get(k)?.find((o) => o.kind === 'MutatingWebhookConfiguration') as Json;
    const hook = (mwc.webhooks as Json[])[0] as Json;
    assert.equal(hook.sideEffects, 'None');
    assert.equal(hook.reinvocationPolicy, 'IfNeeded');
    assert.ok(hook.timeoutSeconds <= 10, 'a short timeout');
    assert.deepEqual(hook.admissionReviewVersions, ['v1']);
    assert.deepEqual(hook.rules, [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }]);
    const exprs = hook.namespaceSelector.matchExpressions as Json[];
    assert.deepEqual(exprs.find((e) => e.key === 'config-sidecar.io/injection'), { key: 'config-sidecar.io/injection', operator: 'In', values: ['enabled'] });
    const excluded = exprs.find((e) => e.key === 'kubernetes.io/metadata.name' && e.operator === 'NotIn')?.values as string[];
    assert.ok(excluded.includes('kube-system') && excluded.includes('config-sidecar'), 'never kube-system nor its own namespace');
    // Fail is scoped by the selector above: only opted-in namespaces are ever sent here.
    assert.equal(hook.failurePolicy, 'Fail');
    assert.equal(hook.clientConfig.service.namespace, 'config-sidecar');
  }
});

test('the injected sidecar keeps its default resources within 64-256 MiB and 50-200m CPU', () => {
  const MiB = 1024 * 1024;
  const sidecars = injected
    .flatMap(({ objects }) => podSpecsIn(objects))
    .filter((p) => p.metadata.annotations?.['config-sidecar.io/status'] === 'injected')
    .filter((p) => !Object.keys(p.metadata.annotations ?? {}).some((a) => /cpu-|memory-/.test(a)))
    .map((p) => (p.spec.initContainers as Json[]).find((c) => c.name === 'config-sidecar') as Json);
  assert.ok(sidecars.length >= 5);
  for (const s of sidecars) {
    for (const m of [s.resources.requests.memory, s.resources.limits.memory]) {
      const bytes = parseQuantity(m) as number;
      assert.ok(bytes >= 64 * MiB && bytes <= 256 * MiB, `memory ${m}`);
    }
    for (const c of [s.resources.requests.cpu, s.resources.limits.cpu]) {
      const cores = parseQuantity(c) as number;
      assert.ok(cores >= 0.05 && cores <= 0.2, `cpu ${c}`);
    }
    assert.equal(s.restartPolicy, 'Always');
    assert.equal(s.securityContext.readOnlyRootFilesystem, true);
  }
});
