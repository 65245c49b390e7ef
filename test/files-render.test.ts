/**
 * The file renderer against real files on disk and the real applied-events hub.
 * The value source is an in-memory map (a unit test of this module); the
 * end-to-end path with a real server and agent is test/files-e2e.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsRegistry as Registry } from '../src/shared/metrics/registry.ts';
import { ScalarMetric } from '../src/shared/metrics/metric.ts';
import { AppliedEventsHub } from '../src/agent/applied-events.ts';
import { nodeWriterFs, type WriterFs } from '../src/agent/files/atomic-writer.ts';
import { parseFileSpecs } from '../src/agent/files/file-spec-schema.ts';
import { FileRenderer, type FilesValueSource } from '../src/agent/files/render-files.ts';
import { AppError } from '../src/shared/errors.ts';
import { createLogger } from '../src/shared/logger.ts';
import { nextEvent } from './helpers/files-wait.ts';
import type { ItemRef } from '../src/shared/paths.ts';

class MemoryValues implements FilesValueSource {
  readonly defaultEnv = 'prod';
  readonly data = new Map<string, { kind: 'config' | 'secret'; text: string; version: number }>();
  reads = 0;
  set(key: string, kind: 'config' | 'secret', text: string): void {
    const version = (this.data.get(key)?.version ?? 0) + 1;
    this.data.set(key, { kind, text, version });
  }
  async read(ref: ItemRef, env = this.defaultEnv) {
    this.reads++;
    const v = this.data.get(`${ref.namespace}/${ref.name}`) ?? this.data.get(`${ref.namespace}/${ref.name}@${env}`);
    if (!v) throw new AppError('not_found', `No item ${ref.namespace}/${ref.name}.`);
    return { kind: v.kind, version: v.version, plaintext: Buffer.from(v.text) };
  }
}

interface Harness {
  dir: string;
  values: MemoryValues;
  hub: AppliedEventsHub;
  registry: Registry;
  renderer: FileRenderer;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

async function harness(t: { after(fn: () => unknown): void }, files: unknown[], options: { writerFs?: WriterFs; guard?: boolean; appliedRevision?: () => number } = {}): Promise<Harness> {
  const root = mkdtempSync(join(tmpdir(), 'files-render-'));
  const dir = join(root, 'files');
  const values = new MemoryValues();
  values.set('app/settings', 'config', JSON.stringify({ log: { level: 'info' }, url: 'pg://db' }));
  values.set('app/db-password', 'secret', 's3cret');
  const hub = new AppliedEventsHub();
  const registry = new Registry();
  const renderer = new FileRenderer({
    filesDir: dir,
    specs: parseFileSpecs(files),
    values,
    events: hub,
    registry,
    logger: createLogger({ component: 'test', level: 'silent' }),
    guard: options.guard ?? false,
    ...(options.writerFs ? { writerFs: options.writerFs } : {}),
    ...(options.appliedRevision ? { appliedRevision: options.appliedRevision } : {}),
  });
  t.after(async () => {
    await renderer.stop();
    rmSync(root, { recursive: true, force: true });
  });
  return {
    dir,
    values,
    hub,
    registry,
    renderer,
    async metric(name, labels = {}) {
      const m = registry.getSingleMetric(name);
      if (!(m instanceof ScalarMetric)) return 0;
      await m.collect();
      const { values: rows } = m.get();
      return rows.filter((r) => Object.entries(labels).every(([k, v]) => r.labels[k] === v)).reduce((sum, r) => sum + r.value, 0);
    },
  };
}

const TWO_FILES = [
  { path: 'app.env', items: ['app/settings', 'app/db-password'], format: 'env' },
  { path: 'conf/settings.json', items: ['app/settings'], format: 'json', mode: '0640' },
  { path: 'pw', items: ['app/db-password'] },
];

test('start renders every file with its mode; an event re-renders only the affected files; unchanged bytes are skipped', async (t) => {
  const h = await harness(t, TWO_FILES);
  await h.renderer.start();
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 's3cret');
  assert.deepEqual(JSON.parse(readFileSync(join(h.dir, 'conf/settings.json'), 'utf8')), { log: { level: 'info' }, url: 'pg://db' });
  assert.match(readFileSync(join(h.dir, 'app.env'), 'utf8'), /^DB_PASSWORD='s3cret'$/m);
  assert.equal(statSync(join(h.dir, 'pw')).mode & 0o777, 0o440);
  assert.equal(statSync(join(h.dir, 'conf/settings.json')).mode & 0o777, 0o640);
  assert.deepEqual(h.renderer.health(), { ready: true, files: { 'app.env': { ok: true }, 'conf/settings.json': { ok: true }, pw: { ok: true } } });

  h.values.set('app/db-password', 'secret', 'rotated');
  const published = nextEvent(h.renderer.activity, 'published');
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'db-password', version: 2, revision: 10 });
  assert.deepEqual((await published)[0], ['app.env', 'pw']);
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 'rotated');
  assert.match(readFileSync(join(h.dir, 'app.env'), 'utf8'), /^DB_PASSWORD='rotated'$/m);
  assert.equal(await h.metric('config_sidecar_agent_files_renders_total', { file: 'conf/settings.json' }), 1, 'not re-rendered');
  assert.equal(await h.metric('config_sidecar_agent_files_renders_total', { file: 'pw' }), 2);

  // A key rotation re-renders the namespace's files; the plaintext is unchanged, so nothing is written.
  const skipped = nextEvent(h.renderer.activity, 'skipped');
  h.hub.publish({ type: 'rotated', namespace: 'app', version: 2, revision: 11 });
  await skipped;
  await h.renderer.settled();
  assert.equal(await h.metric('config_sidecar_agent_files_skips_total'), 3);
  assert.equal(await h.metric('config_sidecar_agent_files_publications_total'), 2);
  const lag = await h.registry.getSingleMetricAsString('config_sidecar_agent_files_event_to_file_seconds');
  assert.match(lag, /^config_sidecar_agent_files_event_to_file_seconds_count 2$/m, 'one lag sample per event');
});

test('a failing file keeps its last good version, is reported, and does not stop the others', async (t) => {
  const h = await harness(t, [
    { path: 'pw', items: ['app/db-password'] },
    { path: 'tpl.txt', items: ['app/settings'], template: 'level={{settings.log.level}}\n' },
  ]);
  await h.renderer.start();
  assert.equal(readFileSync(join(h.dir, 'tpl.txt'), 'utf8'), 'level=info\n');

  h.values.set('app/settings', 'config', JSON.stringify({ url: 'pg://db' })); // log.level gone
  h.values.set('app/db-password', 'secret', 'new');
  const failed = nextEvent(h.renderer.activity, 'failed');
  h.hub.publish({ type: 'resync', namespace: '', revision: 20, reason: 'server' });
  assert.deepEqual(await failed, ['tpl.txt', 'missing_key']);
  await h.renderer.settled();
  assert.equal(readFileSync(join(h.dir, 'tpl.txt'), 'utf8'), 'level=info\n', 'last good version kept');
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 'new', 'the other file still renders');
  const health = h.renderer.health();
  assert.equal(health.files['tpl.txt']?.ok, false);
  assert.match(health.files['tpl.txt']?.detail ?? '', /log\.level.*last good version stays/);
  // At least once: the retry (full jitter, so 1 ms to 500 ms later) may already have failed again (seen under load).
  assert.ok((await h.metric('config_sidecar_agent_files_failures_total', { file: 'tpl.txt', reason: 'missing_key' })) >= 1);
  assert.equal(await h.metric('config_sidecar_agent_files_healthy', { file: 'tpl.txt' }), 0);

  // A deleted item is a missing item: same treatment.
  h.values.data.delete('app/db-password');
  const failed2 = nextEvent(h.renderer.activity, 'failed');
  h.hub.publish({ type: 'deleted', namespace: 'app', name: 'db-password', revision: 21 });
  assert.deepEqual(await failed2, ['pw', 'missing_item']);
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 'new');
});

test('an injected write failure (ENOSPC): error, metric, last good snapshot kept, recovered on the next event', async (t) => {
  let fail = false;
  const writerFs: WriterFs = {
    ...nodeWriterFs,
    async writeFile(path, data, mode) {
      if (fail) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      await nodeWriterFs.writeFile(path, data, mode);
    },
  };
  const h = await harness(t, [{ path: 'pw', items: ['app/db-password'] }], { writerFs });
  await h.renderer.start();
  fail = true;
  h.values.set('app/db-password', 'secret', 'v2');
  const failed = nextEvent(h.renderer.activity, 'failed');
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'db-password', revision: 30 });
  assert.deepEqual(await failed, ['pw', 'ENOSPC']);
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 's3cret');
  assert.equal(await h.metric('config_sidecar_agent_files_failures_total', { file: 'pw', reason: 'ENOSPC' }), 1);
  assert.match(h.renderer.health().files.pw?.detail ?? '', /ENOSPC/);
  fail = false;
  const published = nextEvent(h.renderer.activity, 'published');
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'db-password', revision: 31 });
  await published;
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 'v2');
  assert.deepEqual(h.renderer.health().files.pw, { ok: true });
});

test('the guard restores a file overwritten or deleted by hand and counts both; our own writes are not restored', async (t) => {
  const h = await harness(t, TWO_FILES, { guard: true });
  await h.renderer.start();
  // Our own publication fires watcher events too: it must not count as a restore.
  h.values.set('app/db-password', 'secret', 'mine');
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'db-password', revision: 40 });
  await nextEvent(h.renderer.activity, 'published');

  const restored = nextEvent(h.renderer.activity, 'restored');
  writeFileSync(join(h.dir, 'pw'), 'tampered');
  assert.deepEqual(await restored, ['pw', 'changed']);
  await h.renderer.settled();
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 'mine');

  const deleted = nextEvent(h.renderer.activity, 'restored');
  unlinkSync(join(h.dir, 'conf/settings.json'));
  assert.deepEqual(await deleted, ['conf/settings.json', 'deleted']);
  await h.renderer.settled();
  assert.deepEqual(JSON.parse(readFileSync(join(h.dir, 'conf/settings.json'), 'utf8')).url, 'pg://db');

  assert.equal(await h.metric('config_sidecar_agent_files_restores_total', { file: 'pw', kind: 'changed' }), 1);
  assert.equal(await h.metric('config_sidecar_agent_files_restores_total', { file: 'conf/settings.json', kind: 'deleted' }), 1);
  assert.equal(await h.metric('config_sidecar_agent_files_restores_total'), 2, 'nothing else was restored');
});

test('reconfigure renders new files and deletes removed ones', async (t) => {
  const h = await harness(t, TWO_FILES);
  await h.renderer.start();
  await h.renderer.reconfigure(parseFileSpecs([TWO_FILES[2], { path: 'new/settings.yaml', items: ['app/settings'], format: 'yaml' }]));
  assert.equal(existsSync(join(h.dir, 'app.env')), false);
  assert.equal(existsSync(join(h.dir, 'conf')), false);
  assert.match(readFileSync(join(h.dir, 'new/settings.yaml'), 'utf8'), /url: pg:\/\/db/);
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 's3cret');
  assert.deepEqual(Object.keys(h.renderer.health().files).sort(), ['new/settings.yaml', 'pw']);
});

test('a batch restarted by an event for one of its files still publishes the others (found by the freshness simulation)', async (t) => {
  let gate: (() => void) | undefined;
  const values = new MemoryValues();
  values.set('app/a', 'config', '"a1"');
  values.set('app/b', 'config', '"b1"');
  // Holds app/a's read while `gate` is set, so an event can land mid-batch.
  const held: FilesValueSource = {
    defaultEnv: 'prod',
    read: async (ref, env) => {
      if (ref.name === 'a' && gate === undefined) await new Promise<void>((resolve) => (gate = resolve));
      return values.read(ref, env);
    },
  };
  const root = mkdtempSync(join(tmpdir(), 'files-render-'));
  const dir = join(root, 'files');
  const hub = new AppliedEventsHub();
  const renderer = new FileRenderer({ filesDir: dir, specs: parseFileSpecs([{ path: 'a.json', items: ['app/a'], format: 'raw' }, { path: 'b.json', items: ['app/b'], format: 'raw' }]), values: held, events: hub, registry: new Registry(), logger: createLogger({ component: 'test', level: 'silent' }), guard: false });
  t.after(async () => {
    gate?.();
    await renderer.stop();
    rmSync(root, { recursive: true, force: true });
  });
  const started = renderer.start();
  await new Promise<void>((resolve) => {
    const wait = (): void => void (gate ? resolve() : setImmediate(wait));
    wait();
  });
  const open = gate as () => void;
  gate = () => {}; // later reads of app/a pass
  values.set('app/a', 'config', '"a2"');
  values.set('app/b', 'config', '"b2"');
  // b changes while the first batch (a.json and b.json) is still reading app/a: the batch is read again.
  hub.publish({ type: 'changed', namespace: 'app', name: 'b', version: 2, revision: 2 });
  await new Promise((resolve) => setImmediate(resolve));
  open();
  await started;
  await renderer.settled();
  assert.equal(readFileSync(join(dir, 'a.json'), 'utf8'), 'a2', 'a.json was in the restarted batch and must be published');
  assert.equal(readFileSync(join(dir, 'b.json'), 'utf8'), 'b2');
});

test('publishedRevision (a rollout\'s "files published" level): the applied revision when the files were first published, every handled event after it, and held while a file fails', async (t) => {
  let applied = 7;
  const h = await harness(t, [{ path: 'pw', items: ['app/db-password'] }], { appliedRevision: () => applied });
  await h.renderer.start();
  assert.equal(h.renderer.publishedRevision, 7, 'published from values read at the applied revision');

  // An event for an item no file renders: the files reflect it at once.
  let caughtUp = nextEvent(h.renderer.activity, 'caughtUp');
  applied = 8;
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'settings', revision: 8 });
  assert.deepEqual(await caughtUp, [8]);

  // One the file renders: only once the new bytes are published.
  h.values.set('app/db-password', 'secret', 'rotated');
  caughtUp = nextEvent(h.renderer.activity, 'caughtUp');
  applied = 9;
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'db-password', revision: 9 });
  assert.deepEqual(await caughtUp, [9]);
  assert.equal(readFileSync(join(h.dir, 'pw'), 'utf8'), 'rotated');

  // The last member of a change set stands for the set.
  caughtUp = nextEvent(h.renderer.activity, 'caughtUp');
  applied = 12;
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'settings', revision: 10, setRevision: 12, endsSet: true });
  assert.deepEqual(await caughtUp, [12]);

  // A file that cannot be published holds the revision until it can.
  h.values.data.delete('app/db-password');
  const failed = nextEvent(h.renderer.activity, 'failed');
  applied = 13;
  h.hub.publish({ type: 'deleted', namespace: 'app', name: 'db-password', revision: 13 });
  await failed;
  await h.renderer.settled();
  assert.equal(h.renderer.publishedRevision, 12, 'not published at 13');
  h.values.set('app/db-password', 'secret', 'back');
  caughtUp = nextEvent(h.renderer.activity, 'caughtUp');
  applied = 14;
  h.hub.publish({ type: 'changed', namespace: 'app', name: 'db-password', revision: 14 });
  assert.deepEqual(await caughtUp, [14]);
});
