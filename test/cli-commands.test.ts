/**
 * The CLI as a new user meets it: its own version, errors that say what to do,
 * and the operator commands agreeing with each other and with the API.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as yamlParse } from 'yaml';
import { runCli } from './helpers/process.ts';
import { makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

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

describe('operator commands against a server', () => {
  let server: ServerProcess;
  let home: string;
  before(async () => {
    server = await startServerProcess();
    home = await makeTempDir('cs-login-');
  });
  after(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
    await removeDir(home);
  });
  const asUser = (): Record<string, string> => ({ CONFIG_SIDECAR_SERVER: server.httpUrl, CONFIG_SIDECAR_TOKEN: server.rootToken, HOME: home });

  test('get, get --server and put agree on the default environment; put says when a more specific layer still overrides it', async () => {
    const item = 'production/agree/settings';
    const put = await runCli(['put', item, '{"replicas": 3}'], asUser());
    assert.equal(put.code, 0, put.stderr);
    assert.match(put.stdout, /\(prod\)/);
    assert.equal(put.stderr, '', 'nothing overrides the default layer');
    const got = await runCli(['get', item, '--server', '-o', 'json'], asUser());
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(JSON.parse(got.stdout).value, { replicas: 3 });
    assert.equal(JSON.parse(got.stdout).env, 'prod');

    const base = await runCli(['put', item, '{"replicas": 1, "debug": true}', '--env', 'base'], asUser());
    assert.equal(base.code, 0, base.stderr);
    assert.match(base.stderr, /note: the prod layer\(s\) of production\/agree\/settings still override this write/);
    assert.match(base.stderr, /--env prod/);
  });

  test('CONFIG_SIDECAR_SERVER in the environment does not switch a plain get away from the agent', async () => {
    const dir = await makeTempDir();
    try {
      const result = await runCli(['get', 'production/agree/settings'], { ...asUser(), CONFIG_SIDECAR_SOCKET: `${dir}/no-agent.sock` });
      assert.equal(result.code, 3, result.stderr);
      assert.match(result.stderr, /no-agent\.sock/);
    } finally {
      await removeDir(dir);
    }
  });

  test('list, delete and -o json|yaml on get, history and list', async () => {
    const env = asUser();
    assert.equal((await runCli(['put', 'production/parity/a', '1'], env)).code, 0);
    assert.equal((await runCli(['put', 'production/parity/b', '2', '--env', 'staging'], env)).code, 0);
    const text = await runCli(['list', 'production/parity'], env);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /production\/parity\/a\s+config\s+1/);
    const json = JSON.parse((await runCli(['list', 'production/parity', '-o', 'json'], env)).stdout) as { items: Array<{ name: string; envs: string[] }> };
    assert.deepEqual(json.items.map((i) => [i.name, i.envs]), [['a', ['prod']], ['b', ['staging']]]);
    const yamlList = (await runCli(['list', 'production/parity', '-o', 'yaml'], env)).stdout;
    assert.deepEqual(yamlParse(yamlList), json);
    const history = yamlParse((await runCli(['history', 'production/parity/a', '-o', 'yaml'], env)).stdout) as { versions: unknown[] };
    assert.equal(history.versions.length, 1);
    const getYaml = yamlParse((await runCli(['get', 'production/parity/a', '--server', '-o', 'yaml'], env)).stdout) as { value: unknown };
    assert.equal(getYaml.value, 1);

    const unsure = await runCli(['delete', 'production/parity/b'], env);
    assert.equal(unsure.code, 2);
    assert.match(unsure.stderr, /--env NAME \(one layer\) or --all-envs/);
    const deleted = await runCli(['delete', 'production/parity/b', '--env', 'staging'], env);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stdout, /deleted production\/parity\/b \(staging\) at revision \d+/);
    assert.equal((await runCli(['get', 'production/parity/b', '--server', '--env', 'staging'], env)).code, 1);
  });

  test('login checks the token, stores it with mode 0600, and later commands use it; a refused token stores nothing', async () => {
    const noToken = { HOME: home };
    const refused = await runCli(['login', '--server', server.httpUrl], noToken, { stdin: 'not-a-known-token-0123456789' });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refused the token .*nothing stored/);
    assert.equal(existsSync(join(home, '.config', 'config-sidecar', 'token')), false);

    const login = await runCli(['login', '--server', server.httpUrl], noToken, { stdin: `${server.rootToken}\n` });
    assert.equal(login.code, 0, login.stderr);
    const tokenFile = join(home, '.config', 'config-sidecar', 'token');
    assert.equal((await stat(tokenFile)).mode & 0o777, 0o600);
    assert.equal((await stat(join(home, '.config', 'config-sidecar'))).mode & 0o777, 0o700);
    assert.ok(!login.stdout.includes(server.rootToken), 'the token is never printed');
    const listed = await runCli(['list', 'production'], noToken);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /production\/agree\/settings/);
  });
});
