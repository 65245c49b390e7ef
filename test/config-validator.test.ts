/**
 * The `--config` reload's validator (src/agent/config-validator.ts): the
 * settings pipeline runs in a short-lived child process and its answer comes
 * back as the same settings, or the same refusal, as start-up's in-process
 * run gives; a child that cannot answer is an error that says why, never
 * settings. Real child processes throughout (the failing ones are small
 * scripts standing in for a child killed, hung or confused).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadAgentSettings } from '../src/agent/agent-settings.ts';
import { createConfigValidator, settingsFromAnswer } from '../src/agent/config-validator.ts';
import { SettingError } from '../src/shared/settings.ts';
import { makeTempDir, removeDir } from './helpers/server-process.ts';

const FLAGS = { server: ['http://127.0.0.1:1'], serverGrpc: ['127.0.0.1:2'], prefix: ['team-a'] };
let dir: string;

before(async () => {
  dir = await makeTempDir('cs-config-validator-');
});
after(() => removeDir(dir));

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

test('a valid file comes back as the settings start-up would run with', async () => {
  const config = await file('ok.yaml', 'prefetch: [team-a/app/db-password]\ncacheTtl: 30m\nlogLevel: debug\nhttpListen: "off"\n');
  const flags = { ...FLAGS, config, cacheMaxEntries: '500' };
  assert.deepEqual(await createConfigValidator()(flags), await loadAgentSettings(flags));
});

test('a refused file is the same SettingError, naming the same setting, as in process', async () => {
  for (const [name, text] of [
    ['ttl.yaml', 'cacheTtl: whenever\n'],
    ['typo.yaml', 'cacheTTL: 5m\n'],
    ['yaml.yaml', 'prefix: [unclosed\n'],
    ['outside.yaml', 'prefetch: [team-b/app/key]\n'],
  ] as const) {
    const flags = { ...FLAGS, config: await file(name, text) };
    const expected = await loadAgentSettings(flags).then(
      () => assert.fail(`${name} was accepted in process`),
      (err: unknown) => err as SettingError,
    );
    await assert.rejects(createConfigValidator()(flags), (err: unknown) => {
      assert.ok(err instanceof SettingError, `${name}: ${String(err)}`);
      assert.equal(err.message, expected.message);
      assert.equal(err.setting, expected.setting);
      return true;
    });
  }
  await assert.rejects(createConfigValidator()({ ...FLAGS, config: join(dir, 'missing.yaml') }), /Invalid setting --config \(CONFIG_SIDECAR_CONFIG\): cannot read ".*missing\.yaml" \(ENOENT\)/);
});

test('a validation the agent stops in flight kills its child at once and is refused, never applied', { timeout: 20_000 }, async () => {
  // Shutdown must not wait for a reload's child (up to its 15 s timeout when it hangs).
  const hang = await file('hang-stopped.mjs', 'setInterval(() => {}, 1000);\n');
  const stopping = new AbortController();
  const validation = createConfigValidator({ script: hang, timeoutMs: 60_000 })(FLAGS, stopping.signal);
  stopping.abort();
  await assert.rejects(validation, /^Error: the config file could not be validated: the agent is stopping$/);
  await assert.rejects(createConfigValidator({ script: hang, timeoutMs: 60_000 })(FLAGS, stopping.signal), /was not validated: the agent is stopping/);
});

test('a child that dies, hangs, or answers nonsense is refused with why, never read as settings', async () => {
  const crash = await file('crash.mjs', "process.stderr.write('FATAL ERROR: Reached heap limit\\n'); process.exit(134);\n");
  await assert.rejects(createConfigValidator({ script: crash })(FLAGS), /^Error: the config file could not be validated: it exited with code 134 \(FATAL ERROR: Reached heap limit\)$/);
  const killed = await file('killed.mjs', "process.kill(process.pid, 'SIGKILL');\n");
  await assert.rejects(createConfigValidator({ script: killed })(FLAGS), /could not be validated: it was killed by SIGKILL/);
  const hang = await file('hang.mjs', 'setInterval(() => {}, 1000);\n');
  await assert.rejects(createConfigValidator({ script: hang, timeoutMs: 300 })(FLAGS), /could not be validated: it took longer than 300 ms/);
  const nonsense = await file('nonsense.mjs', "process.stdout.write('{\"ok\":true,\"settings\":{\"socket\":1}}');\n");
  await assert.rejects(createConfigValidator({ script: nonsense })(FLAGS), /the config validator's answer is malformed/);
  // Garbage without end is cut off and refused, not buffered in the agent.
  const flood = await file('flood.mjs', "const chunk = 'x'.repeat(1 << 16);\nconst more = () => process.stdout.write(chunk, more);\nmore();\n");
  await assert.rejects(createConfigValidator({ script: flood })(FLAGS), /could not be validated: it wrote more than 4194304 bytes/);
  const missing = createConfigValidator({ execPath: join(dir, 'no-node') });
  await assert.rejects(missing(FLAGS), /cannot start the config validator \(ENOENT\)/);
});

test('the child gets none of the agent\'s environment (tokens or credentials a pod passes in env, NODE_OPTIONS)', async () => {
  const probe = await file('env-probe.mjs', "process.stdout.write(JSON.stringify({ ok: false, message: `env: ${Object.keys(process.env).join(',') || '(none)'}` }));\n");
  process.env.CONFIG_SIDECAR_TEST_ENV_PROBE = 'a value only the agent may see';
  try {
    await assert.rejects(createConfigValidator({ script: probe })(FLAGS), /^Error: env: \(none\)$/);
  } finally {
    delete process.env.CONFIG_SIDECAR_TEST_ENV_PROBE;
  }
});

test('the answer is checked by hand: unknown settings, wrong types and non-JSON are refused', () => {
  assert.throws(() => settingsFromAnswer('not json'), /not JSON/);
  assert.throws(() => settingsFromAnswer('{"ok":true,"settings":{"extra":1}}'), /malformed \(settings: unknown key\(s\) "extra"\)/);
  assert.throws(() => settingsFromAnswer('{"ok":false,"setting":"--cache-ttl","detail":"bad"}'), (err: unknown) => err instanceof SettingError && err.message === 'Invalid setting --cache-ttl: bad');
  assert.throws(() => settingsFromAnswer('{"ok":false,"message":"prefix refused"}'), /^Error: prefix refused$/);
});
