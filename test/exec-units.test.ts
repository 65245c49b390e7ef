/**
 * The pure parts of `exec`: the change coalescer on a manual clock, and the
 * environment built from references and items (pointers, prefixes, refusals
 * that name the variable and never the value).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/shared/clock.ts';
import { ChangeCoalescer } from '../src/cli/exec/change-coalescer.ts';
import { buildEnv, checkDistinct, parsePrefixRef, parseVarRef, type ReadItem } from '../src/cli/exec/env-refs.ts';
import { SettingError } from '../src/shared/settings.ts';

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('the coalescer acts on the first change at once and folds a burst into one trailing action', async () => {
  const clock = new ManualClock();
  let actions = 0;
  const coalescer = new ChangeCoalescer(1_000, clock, async () => {
    actions += 1;
    return true;
  });
  coalescer.notify();
  await flush();
  assert.equal(actions, 1, 'leading action');
  for (let i = 0; i < 9; i += 1) coalescer.notify();
  clock.advance(999);
  await flush();
  assert.equal(actions, 1, 'nothing more inside the window');
  clock.advance(1);
  await flush();
  assert.equal(actions, 2, 'one trailing action');
  clock.advance(5_000);
  await flush();
  assert.equal(actions, 2);
});

test('a no-op action opens no window, so the next real change acts at once', async () => {
  const clock = new ManualClock();
  const results = [false, true];
  let actions = 0;
  const coalescer = new ChangeCoalescer(60_000, clock, async () => {
    actions += 1;
    return results.shift() ?? true;
  });
  coalescer.notify();
  await flush();
  coalescer.notify();
  await flush();
  assert.equal(actions, 2);
  coalescer.close();
});

test('buildEnv: secrets, config pointers, prefixes; an explicit --env wins over a prefix key', () => {
  const items = new Map<string, ReadItem>([
    ['prod/app/pw', { kind: 'secret', value: 's3cret' }],
    ['prod/app/cfg', { kind: 'config', value: { batchSize: 64, 'db-host': 'h', nested: { a: [1, 2] }, flag: true } }],
    ['prod/app/bin', { kind: 'secret', value: Buffer.from([0xff, 0xfe]).toString('base64'), encoding: 'base64' }],
  ]);
  const refs = [
    parseVarRef('PW=prod/app/pw', '--env'),
    parseVarRef('SECOND=prod/app/cfg#/nested/a/1', '--env'),
    parseVarRef('CFG_FLAG=prod/app/cfg#/flag', '--env'),
    parsePrefixRef('CFG_=prod/app/cfg', '--env-prefix'),
  ];
  assert.deepEqual(buildEnv(refs, items), {
    PW: 's3cret',
    SECOND: '2',
    CFG_FLAG: 'true',
    CFG_BATCHSIZE: '64',
    CFG_DB_HOST: 'h',
    CFG_NESTED: '{"a":[1,2]}',
  });
  assert.throws(() => buildEnv([parseVarRef('B=prod/app/bin', '--env')], items), /B \(prod\/app\/bin\): the secret is binary/);
  assert.throws(() => buildEnv([parseVarRef('X=prod/app/cfg#/missing', '--env')], items), /X: prod\/app\/cfg has nothing at \/missing/);
  assert.throws(() => buildEnv([parseVarRef('X=prod/app/pw#/a', '--env')], items), /needs a config item/);
  assert.throws(() => buildEnv([parsePrefixRef('P_=prod/app/pw', '--env-prefix')], items), /JSON object/);
});

test('references are checked at the edge, naming the flag', () => {
  assert.throws(() => parseVarRef('1BAD=prod/app/pw', '--env'), (e: unknown) => e instanceof SettingError && /--env/.test(e.message));
  assert.throws(() => parseVarRef('A=prod/app/pw#nested', '--env'), /JSON Pointer/);
  assert.throws(() => parseVarRef('A=noslash', '--env'), /not namespace\/name/);
  assert.throws(() => checkDistinct([parseVarRef('A=prod/app/pw', '--env'), parseVarRef('A=prod/app/cfg', '--env-file f:2')]), /A is already set by --env/);
});
