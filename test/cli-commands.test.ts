/**
 * The CLI as a new user meets it: its own version, errors that say what to do,
 * and the operator commands agreeing with each other and with the API.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { runCli } from './helpers/process.ts';
import { makeTempDir, removeDir } from './helpers/server-process.ts';

test('--version prints this package’s version, not the calling project’s npm_package_version', async () => {
  const { version } = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  const result = await runCli(['--version'], { npm_package_version: '9.9.9-caller' });
  assert.equal(result.code, 0);
  assert.equal(result.stdout.trim(), version);
});

test('a missing KEK says what the KEK is and how to make one; backup and rotate --kek say which KEK they need', async (t) => {
  const dataDir = await makeTempDir();
  t.after(() => removeDir(dataDir));
  const server = await runCli(['server', '--data-dir', dataDir]);
  assert.equal(server.code, 2);
  assert.doesNotMatch(server.stderr, /expected string/);
  assert.match(server.stderr, /--kek-file \(CONFIG_SIDECAR_KEK\): is required: the key-encryption key \(KEK\) wraps every data key/);
  assert.match(server.stderr, /openssl rand -base64 32/);
  const backup = await runCli(['backup', '--to', `${dataDir}/snapshot.db`, '--data-dir', dataDir]);
  assert.equal(backup.code, 2);
  assert.match(backup.stderr, /--kek-file \(CONFIG_SIDECAR_KEK\): the KEK the server runs with is required/);
  assert.match(backup.stderr, /\.config-sidecar\/dev-kek/);
});

test('a misspelt key names the file and the key path and suggests the right key (agent --config, server --auth-file)', async (t) => {
  const dir = await makeTempDir();
  t.after(() => removeDir(dir));
  const { writeFile } = await import('node:fs/promises');
  const agentConfig = `${dir}/agent.yaml`;
  await writeFile(agentConfig, 'server: http://127.0.0.1:1\nserverGrpc: 127.0.0.1:2\nprefix: [production]\nprefech: [production/ml/db]\n');
  const agent = await runCli(['agent', '--config', agentConfig]);
  assert.equal(agent.code, 2);
  assert.ok(agent.stderr.includes(`--config (CONFIG_SIDECAR_CONFIG) file "${agentConfig}": unknown key(s) "prefech" (did you mean "prefetch"?)`), agent.stderr);

  const authFile = `${dir}/auth.yaml`;
  await writeFile(authFile, 'roles:\n  - name: reader\n    rulez:\n      - prefixes: [production]\n        actions: [read]\n');
  const server = await runCli(['server', '--data-dir', `${dir}/data`, '--auth-file', authFile, '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], {
    CONFIG_SIDECAR_KEK: (await import('node:crypto')).randomBytes(32).toString('base64'),
  }, { timeoutMs: 15_000 });
  assert.equal(server.code, 2, server.stderr);
  assert.ok(server.stderr.includes(`--auth-file (CONFIG_SIDECAR_AUTH_FILE): ${authFile}: roles.0: unknown key(s) "rulez" (did you mean "rules"?)`), server.stderr);
});
