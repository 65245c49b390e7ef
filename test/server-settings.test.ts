import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { SettingError } from '../src/shared/settings.ts';
import { parseServerSettings } from '../src/server/settings.ts';
import { CLI } from './helpers/server-process.ts';

const kek = randomBytes(32).toString('base64');

test('server settings: defaults, units, and each bad value names its flag and env twin', () => {
  const s = parseServerSettings({ kek });
  assert.equal(s.heartbeatInterval, 1_000);
  assert.equal(s.keyMaxAge, 90 * 86_400_000);
  assert.equal(s.maxBody, 1024 * 1024);
  assert.equal(s.traceSampleRatio, 0.1);
  assert.deepEqual(s.environments, ['base', 'dev', 'staging', 'prod']);
  assert.deepEqual(s.httpListen, { host: '127.0.0.1', port: 8420 });
  assert.equal(s.shutdownGrace, 10_000);
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ heartbeatInterval: '5 parsecs' }, /--heartbeat-interval \(CONFIG_SIDECAR_HEARTBEAT_INTERVAL\)/],
    [{ maxBody: 'lots' }, /--max-body/],
    [{ httpListen: 'nowhere' }, /--http-listen/],
    [{ httpListen: '0.0.0.0:8420' }, /--http-listen.*--insecure/],
    [{ environments: 'base,Prod' }, /--environments/],
    [{ traceSampleRatio: '2' }, /--trace-sample-ratio/],
    [{ tlsCert: '/x.pem' }, /--tls-key/],
    [{ jwtIssuer: 'https://k8s' }, /--jwt-audience/],
    [{ rateLimit: '-1' }, /--rate-limit/],
    [{ shutdownGrace: '0s' }, /--shutdown-grace \(CONFIG_SIDECAR_SHUTDOWN_GRACE\): must be between/],
  ];
  for (const [raw, message] of bad) {
    assert.throws(() => parseServerSettings({ kek, ...raw }), (e: unknown) => e instanceof SettingError && message.test(e.message), JSON.stringify(raw));
  }
  assert.throws(() => parseServerSettings({}), /CONFIG_SIDECAR_KEK/);
  assert.throws(() => parseServerSettings({ kek: 'c2hvcnQ=' }), /32/);
  assert.equal(parseServerSettings({ kek, httpListen: '0.0.0.0:8420', grpcListen: '0.0.0.0:8421', insecure: true }).insecure, true);
});

test('a bad setting stops `config-sidecar server` with exit 2 and a message naming the setting', async () => {
  const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'server', '--watch-buffer', 'many'], { env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: kek }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--watch-buffer \(CONFIG_SIDECAR_WATCH_BUFFER\)/);
});

test('env twins and secret files: CONFIG_SIDECAR_* sets a flag; --kek-file and --root-token-file are read from files', async (t) => {
  const { writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const { http, makeTempDir, removeDir, startServerProcess } = await import('./helpers/server-process.ts');
  const dir = await makeTempDir('cs-secrets-');
  t.after(() => removeDir(dir));
  const kekFile = join(dir, 'kek');
  const tokenFile = join(dir, 'root-token');
  await writeFile(kekFile, `${kek}\n`, { mode: 0o600 });
  await writeFile(tokenFile, 'file-root-token-0123456789\n', { mode: 0o600 });
  const server = await startServerProcess({
    args: ['--kek-file', kekFile, '--root-token-file', tokenFile],
    env: { CONFIG_SIDECAR_KEK: '', CONFIG_SIDECAR_ROOT_TOKEN: '', CONFIG_SIDECAR_MAX_BODY: '1KiB' },
  });
  t.after(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
  });
  const ok = await http(server.httpUrl, 'PUT', '/v1/items/a/b/c', { token: 'file-root-token-0123456789', body: { kind: 'config', value: 1 } });
  assert.equal(ok.status, 200, ok.text);
  const big = await http(server.httpUrl, 'PUT', '/v1/items/a/b/c', { token: 'file-root-token-0123456789', body: { kind: 'config', value: 'x'.repeat(2000) } });
  assert.equal(big.status, 413, 'CONFIG_SIDECAR_MAX_BODY applied');
  const envError = await new Promise<string>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'server'], { env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: kek, CONFIG_SIDECAR_HEARTBEAT_INTERVAL: 'soon' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('exit', () => resolve(stderr));
  });
  assert.match(envError, /--heartbeat-interval \(CONFIG_SIDECAR_HEARTBEAT_INTERVAL\): "soon" is not a duration/);
  const missingFile = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'server', '--kek-file', join(dir, 'nope')], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
  assert.equal(missingFile.code, 2);
  assert.match(missingFile.stderr, /--kek-file: cannot read/);
});

test('a taken --http-listen, --grpc-listen or --admin-listen port stops the server with exit 2 naming the flag; nothing keeps listening', async (t) => {
  const { createServer } = await import('node:net');
  const { makeTempDir, removeDir } = await import('./helpers/server-process.ts');
  const { runCli } = await import('./helpers/process.ts');
  const occupier = createServer();
  await new Promise<void>((resolve) => occupier.listen(0, '127.0.0.1', resolve));
  t.after(() => occupier.close());
  const taken = `127.0.0.1:${(occupier.address() as { port: number }).port}`;
  const results = await Promise.all(
    (['--http-listen', '--grpc-listen', '--admin-listen'] as const).map(async (flag) => {
      const dataDir = await makeTempDir();
      t.after(() => removeDir(dataDir));
      const listen = { '--http-listen': '127.0.0.1:0', '--grpc-listen': '127.0.0.1:0', '--admin-listen': '127.0.0.1:0', [flag]: taken };
      const args = ['server', '--data-dir', dataDir, ...Object.entries(listen).flat()];
      return { flag, result: await runCli(args, { CONFIG_SIDECAR_KEK: kek, CONFIG_SIDECAR_ROOT_TOKEN: 'root-token-0123456789' }, { timeoutMs: 15_000 }) };
    }),
  );
  for (const { flag, result } of results) {
    assert.equal(result.timedOut, false, `${flag}: the server exits instead of running half-started`);
    assert.equal(result.code, 2, result.stderr);
    const env = `CONFIG_SIDECAR_${flag.slice(2).replace('-', '_').toUpperCase()}`;
    assert.ok(result.stderr.includes(`${flag} (${env}): ${taken} is in use by another process`), result.stderr);
  }
});
