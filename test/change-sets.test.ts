import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHANGE_SET_MAX_CHANGES } from '../src/shared/protocol.ts';
import type { WatchEvent } from '../src/shared/watch-proto.ts';
import { http, makeTempDir, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const WRITER_TOKEN = 'team-a-writer-token-0123456789abcdef';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

let server: ServerProcess;
let dir: string;
before(async () => {
  dir = await makeTempDir('cs-sets-');
  const authFile = join(dir, 'auth.yaml');
  await writeFile(
    authFile,
    `version: 1
subjects:
  - name: team-a-writer
    tokens:
      - sha256: ${sha(WRITER_TOKEN)}
roles:
  - name: team-a
    rules:
      - prefixes: [team-a]
        actions: [read, write]
bindings:
  - role: team-a
    subjects: [team-a-writer]
`,
  );
  server = await startServerProcess({ args: ['--auth-file', authFile, '--rate-limit', '0'] });
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

const post = (body: unknown, token = server.rootToken) => http(server.httpUrl, 'POST', '/v1/changes', { token, body });
const get = (path: string) => http(server.httpUrl, 'GET', `/v1/items/${path}`, { token: server.rootToken });
const revisionNow = async (): Promise<number> => {
  const watch = openWatch(server.grpcAddress, { prefixes: ['team-a'] }, server.rootToken);
  const first = await watch.next();
  watch.close();
  return first.type === 'heartbeat' ? first.currentRevision : -1;
};

test('a change set commits as consecutive revisions, each event carrying the set revision; a partial watcher gets a bookmark at the set revision', async () => {
  const seed = await http(server.httpUrl, 'PUT', '/v1/items/team-a/db/old-flag', { token: server.rootToken, body: { kind: 'config', value: true } });
  assert.equal(seed.status, 200, seed.text);
  const watch = openWatch(server.grpcAddress, { prefixes: ['team-a/db'] }, server.rootToken);
  const partial = openWatch(server.grpcAddress, { prefixes: ['team-a/db'] }, server.rootToken);
  const other = openWatch(server.grpcAddress, { prefixes: ['team-b'] }, server.rootToken);
  await Promise.all([watch.next(), partial.next(), other.next()]);

  const res = await post({
    changes: [
      { item: 'team-a/db/username', kind: 'secret', value: 'app-v2' },
      { item: 'team-a/db/password', kind: 'secret', valueBase64: Buffer.from('s3cret-v2').toString('base64') },
      { item: 'team-a/db/settings', env: 'prod', kind: 'config', value: { pool: 5 } },
      { item: 'team-a/db/old-flag', delete: true },
      { item: 'team-b/app/note', kind: 'config', value: 'outside team-a/db' },
    ],
  });
  assert.equal(res.status, 200, res.text);
  const revision = res.json.revision as number;
  assert.deepEqual(
    (res.json.items as Array<{ item: string }>).map((i) => i.item),
    ['team-a/db/username', 'team-a/db/password', 'team-a/db/settings', 'team-a/db/old-flag', 'team-b/app/note'],
  );
  assert.ok((res.json.items as Array<{ version: number }>).every((i) => i.version >= 1));

  const events = (await watch.until((e) => e.type === 'itemDeleted')).filter((e) => e.type !== 'heartbeat');
  assert.deepEqual(
    events.map((e) => [e.type, e.revision, 'setRevision' in e ? e.setRevision : undefined]),
    [
      ['itemChanged', revision - 4, revision],
      ['itemChanged', revision - 3, revision],
      ['itemChanged', revision - 2, revision],
      ['itemDeleted', revision - 1, revision],
    ],
    'consecutive revisions, strictly increasing, each stamped with the set revision',
  );
  // The set's last member (team-b) is filtered out of this stream: a bookmark at the set revision follows at once.
  const closing = await partial.until((e) => e.type === 'heartbeat' && e.revision >= revision, 5_000);
  assert.equal(closing.filter((e) => e.type !== 'heartbeat').length, 4);
  const otherEvents = await other.until((e) => e.type === 'itemChanged');
  assert.deepEqual(otherEvents.filter((e) => e.type !== 'heartbeat').map((e) => [e.revision, (e as WatchEvent & { setRevision?: number }).setRevision]), [[revision, revision]]);
  watch.close();
  partial.close();
  other.close();

  assert.equal((await get('team-a/db/username')).json.value, 'app-v2');
  assert.equal((await get('team-a/db/password')).json.value, 's3cret-v2');
  assert.deepEqual((await get('team-a/db/settings?env=prod')).json.value, { pool: 5 });
  assert.equal((await get('team-a/db/old-flag')).status, 404);

  // A resume replays the set the same way.
  const resumed = openWatch(server.grpcAddress, { prefixes: ['team-a/db'], sinceRevision: revision - 5 }, server.rootToken);
  const replayed = (await resumed.until((e) => e.type === 'heartbeat' && e.revision === revision)).filter((e) => e.type !== 'heartbeat');
  resumed.close();
  assert.deepEqual(replayed.map((e) => e.revision), [revision - 4, revision - 3, revision - 2, revision - 1]);
});

test('a change set is all or nothing: a missing item to delete, a denied member, a duplicate or an oversized set write nothing', async () => {
  const before = await revisionNow();
  const keep = await http(server.httpUrl, 'PUT', '/v1/items/team-a/app/user', { token: server.rootToken, body: { kind: 'secret', value: 'v1' } });
  assert.equal(keep.status, 200);

  const missing = await post({ changes: [{ item: 'team-a/app/user', kind: 'secret', value: 'v2' }, { item: 'team-a/app/ghost', delete: true }] });
  assert.equal(missing.status, 404, missing.text);
  assert.equal(missing.json.error.code, 'not_found');

  const denied = await post({ changes: [{ item: 'team-a/app/user', kind: 'secret', value: 'v2' }, { item: 'team-b/app/user', kind: 'secret', value: 'v2' }] }, WRITER_TOKEN);
  assert.equal(denied.status, 403, denied.text);
  assert.match(denied.json.error.message, /team-b\/app.*nothing was written/);

  const duplicate = await post({ changes: [{ item: 'team-a/app/user', kind: 'secret', value: 'v2' }, { item: 'team-a/app/user', kind: 'secret', value: 'v3' }] });
  assert.equal(duplicate.status, 400, duplicate.text);

  const tooMany = await post({ changes: Array.from({ length: CHANGE_SET_MAX_CHANGES + 1 }, (_, i) => ({ item: `team-a/app/k${i}`, kind: 'config', value: i })) });
  assert.equal(tooMany.status, 413, tooMany.text);
  assert.equal(tooMany.json.error.code, 'payload_too_large');

  const badKind = await post({ changes: [{ item: 'team-a/app/user', kind: 'config', value: 1 }] });
  assert.equal(badKind.status, 409, badKind.text);

  const badPath = await post({ changes: [{ item: 'no-name', kind: 'config', value: 1 }] });
  assert.equal(badPath.status, 400, badPath.text);
  assert.match(badPath.json.error.message, /changes\.0\.item/);

  assert.equal((await get('team-a/app/user')).json.value, 'v1', 'nothing of a refused set was written');
  assert.equal(await revisionNow(), keep.json.revision, 'no revision was taken by a refused set');
  assert.ok(keep.json.revision > before);

  const allowed = await post({ changes: [{ item: 'team-a/app/user', kind: 'secret', value: 'v2' }] }, WRITER_TOKEN);
  assert.equal(allowed.status, 200, allowed.text);
  assert.equal(allowed.json.revision, keep.json.revision + 1);
});

test('put --from-file writes a change set from YAML (a secret from valueFile); a refused set writes nothing and exits 1', async () => {
  const { spawn } = await import('node:child_process');
  const { CLI } = await import('./helpers/server-process.ts');
  const run = (args: string[]): Promise<{ code: number | null; output: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], {
        env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_TOKEN: server.rootToken, CONFIG_SIDECAR_SERVER: server.httpUrl },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code, output }));
    });
  await writeFile(join(dir, 'password.txt'), 'from-a-file');
  await writeFile(
    join(dir, 'changes.yaml'),
    `changes:
  - { item: team-c/db/username, kind: secret, value: app-v3 }
  - { item: team-c/db/password, kind: secret, valueFile: ./password.txt }
  - { item: team-c/db/settings, env: prod, kind: config, value: { pool: 7 } }
`,
  );
  const ok = await run(['put', '--from-file', join(dir, 'changes.yaml')]);
  assert.equal(ok.code, 0, ok.output);
  assert.match(ok.output, /wrote 3 change\(s\) as one set at revision \d+/);
  assert.ok(!ok.output.includes('from-a-file'), 'the secret is not echoed');
  assert.equal((await get('team-c/db/password')).json.value, 'from-a-file');
  assert.deepEqual((await get('team-c/db/settings?env=prod')).json.value, { pool: 7 });

  await writeFile(join(dir, 'bad.yaml'), 'changes:\n  - { item: team-c/db/username, kind: secret, value: app-v4 }\n  - { item: team-c/db/ghost, delete: true }\n');
  const refused = await run(['put', '--from-file', join(dir, 'bad.yaml')]);
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.output, /ghost does not exist.*\(not_found\)/);
  assert.equal((await get('team-c/db/username')).json.value, 'app-v3', 'nothing of the refused set was written');

  const empty = await run(['put', '--from-file', join(dir, 'password.txt')]);
  assert.equal(empty.code, 2, empty.output);
  assert.match(empty.output, /needs a non-empty "changes:" list/);
});
