import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkFilesDir } from '../src/agent/files/file-spec.ts';
import { parseFileSpecs, parseMode } from '../src/agent/files/file-spec-schema.ts';
import { SettingError } from '../src/shared/settings.ts';
import { resolveAgentSettings } from '../src/agent/agent-settings.ts';

function refused(files: unknown, pattern: RegExp): void {
  assert.throws(
    () => parseFileSpecs(files),
    (e: unknown) => e instanceof SettingError && e.setting === 'files' && pattern.test(e.message),
    `expected ${pattern}`,
  );
}

test('a valid entry gets its defaults: format raw, mode 0440, items nested under their names', () => {
  const [spec] = parseFileSpecs([{ path: 'app/db-password', items: ['production/app/db-password'] }]);
  assert.deepEqual(spec, {
    path: 'app/db-password',
    items: [{ namespace: 'production/app', name: 'db-password', as: 'db-password' }],
    format: 'raw',
    mode: 0o440,
  });
  const [withEnv] = parseFileSpecs([{ path: 'x.json', items: [{ item: 'a/b', env: 'staging', as: 'bee' }], format: 'json', mode: '0o640' }]);
  assert.deepEqual(withEnv?.items[0], { namespace: 'a', name: 'b', env: 'staging', as: 'bee' });
  assert.equal(withEnv?.mode, 0o640);
});

test('modes: octal strings, and an unquoted YAML 0440 (read as 440) means 0440', () => {
  assert.equal(parseMode('0440'), 0o440);
  assert.equal(parseMode('640'), 0o640);
  assert.equal(parseMode(440), 0o440);
  for (const bad of ['0999', 'rw-r-----', '0x1a0', '04400', '', 288, -1, 4.4]) assert.equal(parseMode(bad), undefined, String(bad));
});

test('each bad entry is refused with a message naming the entry', () => {
  refused([{ path: '../etc/passwd', items: ['a/b'] }], /files\[0\] \(\.\.\/etc\/passwd\).*"\.\." and would leave --files-dir/);
  refused([{ path: 'ok', items: ['a/b'] }, { path: 'a/../../x', items: ['a/b'] }], /files\[1\] \(a\/\.\.\/\.\.\/x\)/);
  refused([{ path: '/etc/passwd', items: ['a/b'] }], /files\[0\] \(\/etc\/passwd\).*absolute/);
  refused([{ path: '..data', items: ['a/b'] }], /files\[0\] \(\.\.data\).*starts with "\.\."/);
  refused([{ path: 'dir/..hidden', items: ['a/b'] }], /starts with "\.\."/);
  refused([{ path: 'a//b', items: ['a/b'] }], /empty segment/);
  refused([{ path: 'x', items: ['a/b'], mode: '0999' }], /files\[0\] \(x\) mode.*not an octal file mode/);
  refused([{ path: 'x', items: ['a/b'], mode: 'rw-r-----' }], /not an octal file mode/);
  refused([{ path: 'x', items: ['a/b'], mode: '0040' }], /owner \(the agent\) unable to read/);
  refused([{ path: 'x', items: ['a/b'] }, { path: 'x', items: ['a/c'] }], /files\[1\] \(x\).*same destination as files\[0\] \(x\)/);
  refused([{ path: 'x', items: ['a/b'] }, { path: 'x/y', items: ['a/c'] }], /files\[1\] \(x\/y\) would be inside the file written by files\[0\] \(x\)/);
  refused([{ path: 'x', items: ['a/b'], format: 'xml' }], /files\[0\] \(x\) format/);
  refused([{ path: 'x', items: ['a/b', 'a/c'] }], /format raw takes exactly one item/);
  refused([{ path: 'x', items: [] }], /at least one/);
  refused([{ path: 'x', items: ['no-namespace'] }], /item "no-namespace"/);
  refused([{ path: 'x', items: ['a/b', 'c/b'], format: 'json' }], /both nested under "b"; give one an "as:" name/);
  refused([{ path: 'x', items: ['a/b'], template: '{{#open}}' }], /template does not parse/);
  refused([{ path: 'x', items: ['a/b'], template: '{{> partial}}' }], /partials are not supported/);
  refused([{ path: 'x', items: ['a/b'], colour: 'red' }], /files\[0\] \(x\): unknown key\(s\) "colour"/);
});

test('a symlink on the way that escapes --files-dir is refused at config load; our own links pass', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'files-spec-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'files');
  mkdirSync(join(dir, '..data', 'ours'), { recursive: true });
  mkdirSync(join(root, 'outside'));
  symlinkSync('../outside', join(dir, 'escape'));
  symlinkSync('/etc', join(dir, 'abs'));
  symlinkSync('..data/ours', join(dir, 'ours'));
  symlinkSync('../nowhere', join(dir, 'dangling'));
  const specs = (path: string) => parseFileSpecs([{ path: 'fine', items: ['a/b'] }, { path, items: ['a/b'] }]);
  assert.throws(() => checkFilesDir(specs('escape/app.env'), dir), (e: unknown) => e instanceof SettingError && /files\[1\] \(escape\/app\.env\): "escape" is a symlink that leaves --files-dir/.test(e.message));
  assert.throws(() => checkFilesDir(specs('abs/passwd'), dir), /files\[1\] \(abs\/passwd\)/);
  assert.throws(() => checkFilesDir(specs('dangling/x'), dir), /"dangling" is a symlink that leaves/);
  checkFilesDir(specs('ours/app.env'), dir);
  checkFilesDir(specs('not-yet/app.env'), dir);
  checkFilesDir(specs('x'), join(root, 'does-not-exist'));
});

test('the agent config refuses bad files: entries at load, naming the entry (and items outside --prefix)', () => {
  const base = { server: 'http://127.0.0.1:8420', serverGrpc: '127.0.0.1:8421', prefix: ['production'] };
  const root = mkdtempSync(join(tmpdir(), 'files-settings-'));
  try {
    const ok = resolveAgentSettings(base, { files: [{ path: 'a', items: ['production/app/a'] }], filesDir: root });
    assert.equal(ok.files?.length, 1);
    assert.throws(
      () => resolveAgentSettings(base, { files: [{ path: 'a', items: ['staging/app/a'] }], filesDir: root }),
      (e: unknown) => e instanceof SettingError && /files\[0\] \(a\): staging\/app\/a lies outside every --prefix/.test(e.message),
    );
    assert.throws(
      () => resolveAgentSettings(base, { files: [{ path: '/etc/x', items: ['production/app/a'] }], filesDir: root }),
      (e: unknown) => e instanceof SettingError && /files\[0\] \(\/etc\/x\).*absolute/.test(e.message),
    );
    symlinkSync('/etc', join(root, 'etc'));
    assert.throws(() => resolveAgentSettings(base, { files: [{ path: 'etc/x', items: ['production/app/a'] }], filesDir: root }), /symlink that leaves --files-dir/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
