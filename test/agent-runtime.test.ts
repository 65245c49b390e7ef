/**
 * The agent's runtime settings (src/cli/runtime-settings.ts): however the bin
 * is started, the agent process runs with the chosen node flags and malloc
 * environment, keeps the PID it was spawned with, and leaves a setting the
 * operator gave alone.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { AGENT_ENV, AGENT_NODE_FLAGS, runtimePlan } from '../src/cli/runtime-settings.ts';
import { SEMI_SPACE_BYTES } from '../src/agent/memory-budget.ts';
import { removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { putItem, socketGet, startAgentProcess, waitReady } from './helpers/agent-process.ts';

const NODE = '/usr/bin/node';
const SCRIPT = '/app/dist/cli/main.js';
const semiSpaceFlag = AGENT_NODE_FLAGS.find((f) => f.startsWith('--max-semi-space-size='));

test('the agent command is re-executed once with the node flags and environment, keeping argv', () => {
  const plan = runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent', '--prefix', 'p'], execArgv: ['--enable-source-maps'], env: { PATH: '/bin' } });
  assert.ok(plan);
  assert.deepEqual(plan.args, [NODE, '--enable-source-maps', ...AGENT_NODE_FLAGS, SCRIPT, 'agent', '--prefix', 'p']);
  assert.deepEqual(plan.env, { PATH: '/bin', ...AGENT_ENV });
  // The re-executed process sees everything in place and runs on: no loop.
  assert.equal(runtimePlan({ execPath: NODE, argv: plan.args.filter((a) => !AGENT_NODE_FLAGS.includes(a) && a !== '--enable-source-maps'), execArgv: [...AGENT_NODE_FLAGS], env: plan.env }), undefined);
});

test('settings the operator gave are kept: a node flag (command line or NODE_OPTIONS) and the environment variable', () => {
  // The operator set every variable the bin would, one of them to its own value.
  const env: Record<string, string> = { ...AGENT_ENV, MALLOC_ARENA_MAX: '8' };
  const others = AGENT_NODE_FLAGS.filter((f) => f !== semiSpaceFlag);
  const fromArgv = runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent'], execArgv: ['--max-semi-space-size=32'], env });
  assert.deepEqual(fromArgv?.args, others.length ? [NODE, '--max-semi-space-size=32', ...others, SCRIPT, 'agent'] : undefined);
  const fromOptions = runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent'], execArgv: [], env: { ...env, NODE_OPTIONS: '--max_semi_space_size=32' } });
  assert.deepEqual(fromOptions?.args, others.length ? [NODE, ...others, SCRIPT, 'agent'] : undefined);
  assert.equal(runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent'], execArgv: [...AGENT_NODE_FLAGS.map((f) => f.replace(/=.*/, '=32'))], env }), undefined, 'every flag given: no re-exec');
  const plan = runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent'], execArgv: [], env });
  assert.equal(plan?.env.MALLOC_ARENA_MAX, '8');
});

test("an operator's node flags are kept next to the bin's, and --no-<flag> counts as giving the flag", () => {
  const plan = runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent'], execArgv: ['--memory-saver-mode'], env: {} });
  assert.ok(plan);
  assert.deepEqual(plan.args, [NODE, '--memory-saver-mode', ...AGENT_NODE_FLAGS, SCRIPT, 'agent']);
  const off = runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, 'agent'], execArgv: ['--no-max-semi-space-size'], env: {} });
  assert.ok(off && !off.args.includes(semiSpaceFlag as string), off?.args.join(' '));
});

test('the semi-space the bin sets is the one the memory budget counts on', () => {
  assert.equal(semiSpaceFlag, `--max-semi-space-size=${SEMI_SPACE_BYTES / 2 ** 20}`);
});

test('other commands run as started', () => {
  for (const command of ['server', 'get', 'dev', 'webhook']) {
    assert.equal(runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT, command], execArgv: [], env: {} }), undefined, command);
  }
  assert.equal(runtimePlan({ execPath: NODE, argv: [NODE, SCRIPT], execArgv: [], env: {} }), undefined);
});

let server: ServerProcess;

before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/rt/secret', { kind: 'secret', value: 'runtime-secret' });
});

after(async () => {
  await server?.stop();
  await removeDir(server?.dataDir ?? '');
});

test('a real agent process keeps its PID and runs with the flags and environment, and serves', async () => {
  const agent = await startAgentProcess(server, { prefetch: ['production/rt/secret'], args: ['--log-level', 'debug'] });
  try {
    await waitReady(agent.adminUrl);
    const pid = agent.proc.pid as number;
    // The process the test spawned (same PID) is the one that answered "listening" and now holds the settings.
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
    for (const flag of AGENT_NODE_FLAGS) assert.ok(cmdline.includes(flag), `${flag} in ${cmdline.join(' ')}`);
    for (const [name, value] of Object.entries(AGENT_ENV)) assert.ok(environ.includes(`${name}=${value}`), name);
    assert.equal(cmdline.filter((a) => a === 'agent').length, 1);
    const res = await socketGet(agent.socketPath, '/v1/items/production/rt/secret?format=raw');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'runtime-secret');
    // --expose-gc is there for the heap trimmer, which gives start-up's garbage back once the agent is quiet.
    const trimmed = await agent.waitForLog((l) => l.msg === 'heap trimmed', 10_000);
    assert.ok(Number(trimmed.rssAfterMiB) <= Number(trimmed.rssBeforeMiB), JSON.stringify(trimmed));
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/rt/secret?format=raw')).status, 200);
  } finally {
    assert.equal(await agent.stop('SIGTERM'), 0);
    await removeDir(agent.dir);
  }
});
