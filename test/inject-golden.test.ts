/**
 * Golden tests of `config-sidecar inject -f`: for each workload kind and a set
 * of annotation combinations, the real CLI's output equals a reviewed file
 * under test/fixtures/k8s/inject, and injecting the output again changes
 * nothing. `UPDATE_GOLDEN=1` rewrites the expected files (review the diff!).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { goldenCases, runCli } from './helpers/k8s-cli.ts';

const UPDATE = process.env.UPDATE_GOLDEN === '1';
const cases = goldenCases();

test('every workload kind has a golden case', () => {
  const kinds = new Set<string>();
  for (const c of cases) {
    for (const doc of parseAllDocuments(c.input)) {
      const obj = doc.toJS() as { kind?: string; items?: Array<{ kind?: string }> } | null;
      if (obj?.kind === 'List') obj.items?.forEach((i) => kinds.add(String(i.kind)));
      else if (obj?.kind) kinds.add(obj.kind);
    }
  }
  for (const kind of ['Pod', 'Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob']) assert.ok(kinds.has(kind), `no golden case for ${kind}`);
});

for (const c of cases) {
  test(`inject -f ${c.name}: output equals the reviewed golden file, and a second injection changes nothing`, async () => {
    const once = await runCli(['inject', '-f', c.inputPath, ...c.flags]);
    assert.equal(once.code, 0, once.stderr);
    if (UPDATE) writeFileSync(c.expectedPath, once.stdout);
    assert.equal(once.stdout, readFileSync(c.expectedPath, 'utf8'));

    const twice = await runCli(['inject', '-f', '-', ...c.flags], once.stdout);
    assert.equal(twice.code, 0, twice.stderr);
    assert.equal(twice.stdout, once.stdout, 'injecting an injected workload must change nothing');
  });
}

test('inject -f refuses a bad document, names it, and writes nothing to stdout', async () => {
  const input = `apiVersion: v1
kind: Service
metadata: {name: ok}
---
apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations:
    config-sidecar.io/inject: "true"
    config-sidecar.io/prefixes: production/shop
    config-sidecar.io/memory-limit: lots
spec:
  containers: [{name: app, image: x}]
`;
  const result = await runCli(['inject', '-f', '-'], input);
  assert.equal(result.code, 1);
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /document 2: Pod bad: injection failed at step "defaults": annotation config-sidecar\.io\/memory-limit: "lots" is not a positive Kubernetes memory quantity/);
});

test('inject -f checks an agent config it can see: a file item outside the prefixes is refused', async () => {
  const input = `apiVersion: v1
kind: ConfigMap
metadata: {name: agent, namespace: shop}
data:
  agent.yaml: |
    files:
      - path: other.env
        format: env
        items: [production/billing/api-key]
---
apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: shop
  annotations:
    config-sidecar.io/inject: "true"
    config-sidecar.io/prefixes: production/shop
    config-sidecar.io/config-map: agent
spec:
  containers: [{name: app, image: x}]
`;
  const result = await runCli(['inject', '-f', '-'], input);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /step "validate".*files\[0\] \(other\.env\) refers to "production\/billing\/api-key", outside the prefixes \(production\/shop\)/);
});

test('inject reports a bad injector flag by name with its environment twin', async () => {
  const result = await runCli(['inject', '-f', '-', '--token-expiration', '1m'], 'kind: Service\n');
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--token-expiration \(CONFIG_SIDECAR_TOKEN_EXPIRATION\): the API server requires at least 10m/);
  const viaEnv = await runCli(['inject', '-f', '-'], 'kind: Service\n', { CONFIG_SIDECAR_SHARED_GROUP: '0' });
  assert.equal(viaEnv.code, 2);
  assert.match(viaEnv.stderr, /--shared-group/);
});

test('inject -f reports an unreadable file and invalid YAML without output', async () => {
  const missing = await runCli(['inject', '-f', '/nonexistent/pod.yaml']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read \/nonexistent\/pod\.yaml: ENOENT/);
  const broken = await runCli(['inject', '-f', '-'], 'kind: Service\n---\nkind: Pod\nmetadata: {name: [unclosed\n');
  assert.equal(broken.code, 1);
  assert.equal(broken.stdout, '');
  assert.match(broken.stderr, /document 2: not valid YAML/);
  const template = await runCli(
    ['inject', '-f', '-'],
    'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata:\n      annotations: {config-sidecar.io/inject: "true"}\n    spec: {}\n',
  );
  assert.equal(template.code, 1);
  assert.match(template.stderr, /Deployment web: the pod template is invalid at spec\.template\.spec\.containers/);
});
