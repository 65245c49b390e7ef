import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsRegistry as Registry } from '../src/shared/metrics/registry.ts';
import { parse } from 'yaml';
import { ConfigWatcher, type ReloadOutcome } from '../src/agent/files/config-watcher.ts';
import { parseFileSpecs } from '../src/agent/files/file-spec-schema.ts';
import { createLogger } from '../src/shared/logger.ts';
import { within } from './helpers/files-wait.ts';

test('config file edits: a valid one is applied, an invalid one refused with the entry named, a rename-replace seen', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'files-config-'));
  const path = join(dir, 'agent.yaml');
  writeFileSync(path, 'files:\n  - path: a\n    items: [app/a]\n');
  let applied: string[] = parseFileSpecs(parse(readFileSync(path, 'utf8')).files).map((s) => s.path);
  const outcomes: Array<{ outcome: ReloadOutcome; error?: string | undefined }> = [];
  let wake: (() => void) | undefined;
  const next = (): Promise<{ outcome: ReloadOutcome; error?: string | undefined }> =>
    within(
      new Promise((resolve) => {
        const take = (): void => {
          wake = undefined;
          const o = outcomes.shift();
          if (o && o.outcome !== 'unchanged') resolve(o);
          else if (o) take();
          else wake = take;
        };
        take();
      }),
      'a config reload',
    );
  const registry = new Registry();
  const watcher = new ConfigWatcher({
    path,
    logger: createLogger({ component: 'test', level: 'silent' }),
    registry,
    async apply() {
      applied = parseFileSpecs(parse(readFileSync(path, 'utf8')).files).map((s) => s.path);
    },
    onReload(outcome, error) {
      outcomes.push({ outcome, error });
      wake?.();
    },
  });
  t.after(async () => {
    await watcher.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await watcher.ready;

  writeFileSync(path, 'files:\n  - path: a\n    items: [app/a]\n  - path: b\n    items: [app/b]\n');
  assert.deepEqual(await next(), { outcome: 'applied', error: undefined });
  assert.deepEqual(applied, ['a', 'b']);

  writeFileSync(path, 'files:\n  - path: ../escape\n    items: [app/a]\n');
  const refused = await next();
  assert.equal(refused.outcome, 'refused');
  assert.match(refused.error ?? '', /files\[0\] \(\.\.\/escape\)/);
  assert.deepEqual(applied, ['a', 'b'], 'the running config stays');

  // Editors and ConfigMap volumes replace the file by rename.
  writeFileSync(join(dir, 'agent.yaml.tmp'), 'files:\n  - path: c\n    items: [app/c]\n');
  renameSync(join(dir, 'agent.yaml.tmp'), path);
  assert.equal((await next()).outcome, 'applied');
  assert.deepEqual(applied, ['c']);
  assert.match(await registry.getSingleMetricAsString('config_sidecar_agent_config_reloads_total'), /outcome="refused"} 1/);
});
