import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { http, makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const started: ServerProcess[] = [];
const dirs: string[] = [];
after(async () => {
  for (const s of started) await s.stop('SIGKILL');
  for (const d of dirs) await removeDir(d);
});

test('config overlays and a secret survive a restart, read back per environment', async () => {
  const dataDir = await makeTempDir();
  dirs.push(dataDir);
  const first = await startServerProcess({ dataDir });
  started.push(first);
  const token = first.rootToken;
  const put = (path: string, body: unknown) => http(first.httpUrl, 'PUT', path, { token, body });

  assert.equal((await put('/v1/items/production/ml-service/settings?env=base', { kind: 'config', value: { db: { host: 'db', port: 5432 }, replicas: 1 } })).status, 200);
  assert.equal((await put('/v1/items/production/ml-service/settings?env=staging', { kind: 'config', value: { replicas: 2 } })).status, 200);
  assert.equal((await put('/v1/items/production/ml-service/settings?env=prod', { kind: 'config', value: { db: { host: 'db-prod' }, replicas: 5 } })).status, 200);
  const secret = await put('/v1/items/production/ml-service/db-password?env=base', { kind: 'secret', value: 'hunter2-ünïcode' });
  assert.equal(secret.status, 200);
  assert.ok(secret.json.version >= 1 && secret.json.revision >= 4);
  assert.equal((await put('/v1/items/production/ml-service/tls-key?env=base', { kind: 'secret', valueBase64: Buffer.from([0xff, 0xfe, 0x00, 0x01]).toString('base64') })).status, 200);

  const expected: Record<string, unknown> = {
    base: { db: { host: 'db', port: 5432 }, replicas: 1 },
    dev: { db: { host: 'db', port: 5432 }, replicas: 1 },
    staging: { db: { host: 'db', port: 5432 }, replicas: 2 },
    prod: { db: { host: 'db-prod', port: 5432 }, replicas: 5 },
  };
  const readAll = async (server: ServerProcess): Promise<void> => {
    for (const [env, value] of Object.entries(expected)) {
      const res = await http(server.httpUrl, 'GET', `/v1/items/production/ml-service/settings?env=${env}`, { token });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.json.value, value, env);
      assert.equal(res.json.kind, 'config');
      assert.equal(res.headers.etag, res.json.etag);
    }
    const s = await http(server.httpUrl, 'GET', '/v1/items/production/ml-service/db-password?env=prod', { token });
    assert.equal(s.status, 200, s.text);
    assert.equal(s.json.value, 'hunter2-ünïcode');
    assert.equal(s.json.encoding, undefined);
    const b = await http(server.httpUrl, 'GET', '/v1/items/production/ml-service/tls-key', { token });
    assert.equal(b.json.encoding, 'base64');
    assert.deepEqual(Buffer.from(b.json.value as string, 'base64'), Buffer.from([0xff, 0xfe, 0x00, 0x01]));
  };
  await readAll(first);
  const staging = await http(first.httpUrl, 'GET', '/v1/items/production/ml-service/settings?env=staging', { token });
  const notModified = await http(first.httpUrl, 'GET', '/v1/items/production/ml-service/settings?env=staging', { token, headers: { 'if-none-match': staging.json.etag } });
  assert.equal(notModified.status, 304);

  assert.equal(await first.stop('SIGTERM'), 0);
  const second = await startServerProcess({ dataDir, kek: first.kek, rootToken: token });
  started.push(second);
  await readAll(second);
  assert.ok(!second.output().includes('hunter2'), 'the secret value never appears in logs');
  assert.ok(!first.output().includes(token), 'the token never appears in logs');
});

test('sample data seeds an empty store once, with overlays and secrets', async () => {
  const { seedSampleData, SAMPLE_ITEMS } = await import('../src/server/sample-data.ts');
  const server = await startServerProcess();
  started.push(server);
  dirs.push(server.dataDir);
  await server.stop();
  const { openControlPlane } = await import('../src/server/control-plane-impl.ts');
  const { kekFromBase64 } = await import('../src/server/kek.ts');
  const { systemClock } = await import('../src/shared/clock.ts');
  const { createLogger } = await import('../src/shared/logger.ts');
  const cp = await openControlPlane({
    dataDir: server.dataDir,
    kek: kekFromBase64(server.kek, 'test'),
    environments: ['base', 'dev', 'staging', 'prod'],
    maxVersionsPerItem: 20,
    keyMaxAge: 90 * 86_400_000,
    retainEvents: 1000,
    clock: systemClock,
    logger: createLogger({ component: 'test', level: 'silent' }),
  });
  try {
    assert.equal(await seedSampleData(cp), SAMPLE_ITEMS.length);
    assert.equal(await seedSampleData(cp), 0, 'never twice');
    const prod = await cp.getItem({ namespace: 'production/ml-service', name: 'settings' }, 'prod');
    assert.deepEqual(JSON.parse(prod.value.toString()), { model: 'resnet-50', batchSize: 64, features: { cache: true, tracing: true }, db: { host: 'db-prod.internal', port: 5432 } });
    const secret = await cp.getItem({ namespace: 'production/ml-service', name: 'db-password' }, 'dev');
    assert.equal(secret.kind, 'secret');
  } finally {
    await cp.close();
  }
});
