/**
 * The webhook as the API server sees it: a real `config-sidecar webhook`
 * process over real HTTPS (self-signed certificate from openssl), real
 * AdmissionReview v1 bodies. The returned JSONPatch, applied with an
 * independent JSON Patch library, equals the `inject -f` golden output; bad
 * inputs are refused (allowed:false or HTTP 4xx) and the webhook keeps
 * serving; a rotated certificate is picked up without a restart.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import jsonpatch from 'fast-json-patch';
import { parseAllDocuments } from 'yaml';
import { goldenCases, REPO_ROOT, runCli } from './helpers/k8s-cli.ts';
import { validateObject } from './helpers/k8s-schema.ts';
import { restrictedViolations } from './helpers/k8s-pss.ts';
import { httpsRequest, makeSelfSigned, readText, publishSecret, startWebhookProcess, type KeyPairFiles, type WebhookProcess } from './helpers/k8s-webhook.ts';
import { POD_TEMPLATE_PATHS } from '../src/webhook/workloads.ts';

type Json = Record<string, unknown>;
/** Longer than the webhook's own hard shutdown deadline (15 s). */
const STUCK_EXIT_KILL_MS = 20_000;

let dir: string;
let tlsDir: string;
let pair: KeyPairFiles;
let webhook: WebhookProcess;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'webhook-https-'));
  tlsDir = join(dir, 'tls');
  pair = makeSelfSigned('config-sidecar-webhook');
  publishSecret(tlsDir, pair, 0);
  webhook = await startWebhookProcess(tlsDir);
});

after(async () => {
  await webhook?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Every injectable pod template in a YAML text, as a Pod, in document order. */
function podsIn(text: string): Json[] {
  const pods: Json[] = [];
  const visit = (obj: Json) => {
    if (obj.kind === 'List') return (obj.items as Json[]).forEach(visit);
    const path = POD_TEMPLATE_PATHS[String(obj.kind)];
    if (!path) return;
    let template: unknown = obj;
    for (const key of path) template = (template as Json)[key];
    const t = template as Json;
    const namespace = (obj.metadata as Json | undefined)?.namespace;
    pods.push({ apiVersion: 'v1', kind: 'Pod', metadata: { ...(t.metadata as Json), namespace }, spec: t.spec });
  };
  for (const doc of parseAllDocuments(text)) {
    const obj = doc.toJS() as Json | null;
    if (obj) visit(obj);
  }
  return pods;
}

let uidCounter = 0;
function review(object: unknown, overrides: Json = {}): Json {
  uidCounter += 1;
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `00000000-0000-4000-8000-${String(uidCounter).padStart(12, '0')}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object,
      dryRun: false,
      ...overrides,
    },
  };
}

interface Response {
  uid: string;
  allowed: boolean;
  patchType?: string;
  patch?: string;
  status?: { code: number; message: string };
}

async function admit(body: Json): Promise<Response> {
  const answer = await httpsRequest(webhook.port, pair.cert, { body: JSON.stringify(body) });
  assert.equal(answer.status, 200, answer.body);
  const parsed = JSON.parse(answer.body) as { apiVersion: string; kind: string; response: Response };
  assert.equal(parsed.apiVersion, 'admission.k8s.io/v1');
  assert.equal(parsed.kind, 'AdmissionReview');
  assert.equal(parsed.response.uid, (body.request as Json).uid, 'the response echoes the request uid');
  return parsed.response;
}

function applied(pod: Json, response: Response): Json {
  if (!response.patch) return pod;
  assert.equal(response.patchType, 'JSONPatch');
  const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) as jsonpatch.Operation[];
  return jsonpatch.applyPatch(structuredClone(pod), ops, true, false).newDocument;
}

const podTemplate = (extra: { annotations?: Json; spec?: Json } = {}): Json => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    generateName: 'web-',
    namespace: 'shop',
    annotations: { 'config-sidecar.io/inject': 'true', 'config-sidecar.io/prefixes': 'production/shop', ...extra.annotations },
  },
  spec: { containers: [{ name: 'app', image: 'registry.example/app:1' }], ...extra.spec },
});

for (const c of goldenCases().filter((g) => g.flags.length === 0)) {
  test(`webhook ${c.name}: the JSONPatch applied with fast-json-patch equals the inject -f golden output`, async () => {
    const inputs = podsIn(c.input);
    const expected = podsIn(readText(c.expectedPath));
    assert.equal(inputs.length, expected.length);
    for (const [i, pod] of inputs.entries()) {
      const response = await admit(review(pod));
      assert.equal(response.allowed, true, response.status?.message);
      assert.deepEqual(applied(pod, response), expected[i]);
      // The API server reinvokes on IfNeeded: the injected pod must come back unchanged.
      const again = await admit(review(expected[i]));
      assert.equal(again.allowed, true);
      assert.equal(again.patch, undefined, 'an injected pod gets no patch');
    }
  });
}

test('reinvocation after another webhook added a container wires only that container', async () => {
  const injected = applied(podTemplate(), await admit(review(podTemplate())));
  const spec = injected.spec as { containers: Json[] };
  spec.containers.push({ name: 'late-proxy', image: 'registry.example/proxy:1' });
  const response = await admit(review(injected));
  const result = applied(injected, response);
  const late = (result.spec as { containers: Json[] }).containers[1] as { volumeMounts: Json[]; env: Json[] };
  assert.deepEqual(late.volumeMounts.map((m) => m.name), ['config-sidecar-run', 'config-sidecar-files']);
  assert.deepEqual(late.env, [{ name: 'CONFIG_SIDECAR_SOCKET', value: '/run/config-sidecar/agent.sock' }]);
  assert.equal((result.spec as { initContainers: Json[] }).initContainers.length, 1, 'no second sidecar');
});

test('a pod without the annotation is allowed untouched', async () => {
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain' }, spec: { containers: [{ name: 'a', image: 'x' }] } };
  const response = await admit(review(pod));
  assert.equal(response.allowed, true);
  assert.equal(response.patch, undefined);
});

const refusals: Array<{ name: string; body: () => Json; message: RegExp }> = [
  {
    name: 'a kind other than Pod',
    body: () => review({ apiVersion: 'apps/v1', kind: 'Deployment' }, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }),
    message: /injects Pods only, got apps\/v1 Deployment/,
  },
  { name: 'a missing object', body: () => review(undefined), message: /has no object/ },
  { name: 'an object that is not a pod', body: () => review({ spec: { containers: 'nope' } }), message: /Pod is invalid at spec\.containers/ },
  {
    name: 'an invalid annotation value',
    body: () => review(podTemplate({ annotations: { 'config-sidecar.io/inject': 'yes' } })),
    message: /step "should-inject": annotation config-sidecar\.io\/inject: "yes" is not allowed; write "true" or "false"/,
  },
  {
    name: 'an unknown config-sidecar.io annotation (a typo)',
    body: () => review(podTemplate({ annotations: { 'config-sidecar.io/prefix': 'production/shop' } })),
    message: /annotation config-sidecar\.io\/prefix: unknown annotation; the config-sidecar\.io\/ annotations are: inject, prefixes/,
  },
  {
    name: 'conflicting annotations (prefetch outside the prefixes)',
    body: () => review(podTemplate({ annotations: { 'config-sidecar.io/prefetch': 'production/billing/api-key' } })),
    message: /step "defaults": annotation config-sidecar\.io\/prefetch: "production\/billing\/api-key" lies outside config-sidecar\.io\/prefixes \(production\/shop\)/,
  },
  {
    name: 'a request above its limit',
    body: () => review(podTemplate({ annotations: { 'config-sidecar.io/memory-request': '512Mi' } })),
    message: /memory-request: "512Mi" is above config-sidecar\.io\/memory-limit "256Mi"/,
  },
  {
    name: 'an existing container named like the sidecar',
    body: () => review(podTemplate({ spec: { containers: [{ name: 'config-sidecar', image: 'someone-else' }] } })),
    message: /step "validate": the pod already has a container named "config-sidecar" that config-sidecar did not inject/,
  },
  {
    name: 'a volume name collision',
    body: () =>
      review(podTemplate({ spec: { containers: [{ name: 'a', image: 'x' }], volumes: [{ name: 'config-sidecar-files', emptyDir: {} }] } })),
    message: /step "validate": the pod already has a volume named "config-sidecar-files"/,
  },
  {
    name: 'an app port the agent needs',
    body: () => review(podTemplate({ spec: { containers: [{ name: 'a', image: 'x', ports: [{ containerPort: 8431 }] }] } })),
    message: /container "a" uses port 8431, which the agent listens on/,
  },
  {
    name: 'a hostNetwork pod',
    body: () => review(podTemplate({ spec: { containers: [{ name: 'a', image: 'x' }], hostNetwork: true } })),
    message: /hostNetwork pods are not injected/,
  },
];

for (const r of refusals) {
  test(`webhook refuses ${r.name} with allowed:false and a message, and keeps serving`, async () => {
    const response = await admit(r.body());
    assert.equal(response.allowed, false);
    assert.equal(response.patch, undefined);
    assert.equal(response.status?.code, 400);
    assert.match(response.status?.message ?? '', r.message);
    const ok = await admit(review(podTemplate()));
    assert.equal(ok.allowed, true);
  });
}

const httpErrors: Array<{ name: string; body: string | Buffer; contentType?: string; status: number; code: string; message: RegExp }> = [
  { name: 'a body that is not JSON', body: '{"apiVersion": "admission.k8s.io/v1", ', status: 400, code: 'invalid_json', message: /not valid JSON/ },
  { name: 'an empty body', body: '', status: 400, code: 'invalid_json', message: /empty/ },
  {
    name: 'the wrong AdmissionReview version',
    body: JSON.stringify({ ...review(podTemplate()), apiVersion: 'admission.k8s.io/v1beta1' }),
    status: 400,
    code: 'bad_request',
    message: /Only admission\.k8s\.io\/v1 AdmissionReview is supported, got admission\.k8s\.io\/v1beta1/,
  },
  { name: 'a review without a request', body: JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), status: 400, code: 'bad_request', message: /no request/ },
  { name: 'a JSON array', body: '[1,2]', status: 400, code: 'bad_request', message: /not an AdmissionReview/ },
  { name: 'a non-JSON content type', body: 'kind: AdmissionReview', contentType: 'application/yaml', status: 415, code: 'unsupported_media_type', message: /application\/json/ },
  { name: 'an oversized request (5 MiB)', body: Buffer.alloc(5 * 1024 * 1024, 0x20), status: 413, code: 'payload_too_large', message: /limit/ },
];

for (const h of httpErrors) {
  test(`webhook answers ${h.name} with HTTP ${h.status} and a JSON error, and keeps serving`, async () => {
    const answer = await httpsRequest(webhook.port, pair.cert, { body: h.body, ...(h.contentType ? { contentType: h.contentType } : {}) });
    assert.equal(answer.status, h.status, answer.body);
    const body = JSON.parse(answer.body) as { error: { code: string; message: string } };
    assert.equal(body.error.code, h.code);
    assert.match(body.error.message, h.message);
    assert.equal((await admit(review(podTemplate()))).allowed, true);
  });
}

test('webhook serves /healthz, /readyz and /metrics on its TLS port, and counts outcomes', async () => {
  for (const path of ['/healthz', '/readyz']) {
    const answer = await httpsRequest(webhook.port, pair.cert, { method: 'GET', path });
    assert.equal(answer.status, 200, path);
  }
  const metrics = await httpsRequest(webhook.port, pair.cert, { method: 'GET', path: '/metrics' });
  assert.match(metrics.body, /config_sidecar_webhook_admissions_total\{outcome="patched"\} [1-9]/);
  assert.match(metrics.body, /config_sidecar_webhook_admissions_total\{outcome="denied"\} [1-9]/);
  assert.equal(webhook.child.exitCode, null, 'still running after every bad input');
});

test('a rotated certificate (kubelet-style ..data swap) is served without a restart; a broken pair is refused and the old one kept', async () => {
  const before = await httpsRequest(webhook.port, pair.cert, { method: 'GET', path: '/healthz' });
  assert.equal(before.fingerprint, new X509Certificate(pair.cert).fingerprint256);

  // A mismatched pair (new certificate, old key), as a half-finished rotation would leave it.
  const other = makeSelfSigned('config-sidecar-webhook');
  publishSecret(tlsDir, { cert: other.cert, key: pair.key }, 1);
  await webhook.waitForLog((l) => l.msg === 'TLS pair not reloaded; still serving the previous certificate');
  assert.equal((await httpsRequest(webhook.port, pair.cert, { method: 'GET', path: '/healthz' })).fingerprint, before.fingerprint);

  const rotated = makeSelfSigned('config-sidecar-webhook');
  publishSecret(tlsDir, rotated, 2);
  const reloaded = await webhook.waitForLog((l) => l.msg === 'tls certificate reloaded');
  assert.equal(reloaded.fingerprint, new X509Certificate(rotated.cert).fingerprint256);
  const answer = await httpsRequest(webhook.port, rotated.cert, { method: 'GET', path: '/healthz' });
  assert.equal(answer.status, 200);
  assert.equal(answer.fingerprint, new X509Certificate(rotated.cert).fingerprint256);
  pair = rotated;
  assert.equal((await admit(review(podTemplate()))).allowed, true);
});

test('a webhook that cannot load its certificate, or is given a bad setting, exits 2 naming the setting', async () => {
  const missing = await runCli(['webhook', '--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'nope.crt'), '--tls-key', join(dir, 'nope.key')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /Invalid setting --tls-cert\/--tls-key .*cannot load the TLS pair: ENOENT/);
  const badEnv = await runCli(['webhook', '--listen', '127.0.0.1:0'], '', { CONFIG_SIDECAR_MAX_BODY: 'huge' });
  assert.equal(badEnv.code, 2);
  assert.match(badEnv.stderr, /--max-body \(CONFIG_SIDECAR_MAX_BODY\): "huge" is not a size/);
});

test('an AdmissionReview as the API server sends it (defaulted pod from a ReplicaSet) is injected; the result is a valid, restricted pod that a reinvocation leaves alone', async () => {
  const body = JSON.parse(readText(join(REPO_ROOT, 'test', 'fixtures', 'k8s', 'admission', 'pod-create-from-replicaset.json'))) as Json;
  const pod = (body.request as Json).object as Json;
  const response = await admit(body);
  assert.equal(response.allowed, true, response.status?.message);
  const injected = applied(pod, response);
  assert.deepEqual(await validateObject(injected), []);
  assert.deepEqual(restrictedViolations(injected.spec as Json, 'pod'), []);
  const spec = injected.spec as { initContainers: Json[]; containers: Json[]; securityContext: Json; volumes: Json[] };
  assert.equal(spec.initContainers[0]?.name, 'config-sidecar');
  assert.equal(spec.securityContext.fsGroup, 65532, 'an empty securityContext gets the shared group');
  assert.deepEqual(spec.volumes[0]?.name, 'kube-api-access-x7k2p', "the pod's own volumes stay first and untouched");

  // What the API server stores and reinvocation sends: the patched pod with its own defaults on our sidecar.
  const sidecar = spec.initContainers[0] as Json;
  Object.assign(sidecar, { terminationMessagePath: '/dev/termination-log' });
  Object.assign(sidecar.startupProbe as Json, { successThreshold: 1 });
  const again = await admit(review(injected));
  assert.equal(again.allowed, true);
  assert.equal(again.patch, undefined, 'API-server defaults do not make the sidecar stale');
});

test('50 concurrent reviews each get their own answer (uid echoed, same patch)', async () => {
  const bodies = Array.from({ length: 50 }, () => review(podTemplate()));
  const answers = await Promise.all(bodies.map((b) => admit(b)));
  const patches = new Set(answers.map((a) => a.patch));
  assert.equal(patches.size, 1, 'the same pod gets the same patch');
  assert.ok(answers.every((a) => a.allowed));
});

test('the webhook exits 0 on SIGTERM', async () => {
  webhook.child.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => webhook.child.once('exit', (c) => resolve(c)));
  assert.equal(code, 0);
  assert.ok(webhook.lines.some((l) => l.msg === 'signal received'));
});

test('the webhook exits 0 on SIGTERM even when nobody reads its log any more (broken stdout pipe)', async () => {
  const second = await startWebhookProcess(tlsDir);
  try {
    const exited = new Promise<number | null>((resolve) => second.child.once('exit', (c) => resolve(c)));
    // Every later log write fails with EPIPE, as when the parent that piped stdout died.
    second.child.stdout?.destroy();
    second.child.kill('SIGTERM');
    // A webhook stuck in its exit must fail this test, not hold the suite: SIGKILL makes the code null.
    const killer = setTimeout(() => second.child.kill('SIGKILL'), STUCK_EXIT_KILL_MS);
    const code = await exited;
    clearTimeout(killer);
    assert.equal(code, 0, `signal ${second.child.signalCode}`);
  } finally {
    if (second.child.exitCode === null && second.child.signalCode === null) second.child.kill('SIGKILL');
  }
});
