import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as dotenvParse } from 'dotenv';
import { parse as yamlParse } from 'yaml';
import { parseFileSpecs } from '../src/agent/files/file-spec-schema.ts';
import type { FileSpec } from '../src/agent/files/file-spec.ts';
import { loadFormats, renderFile } from '../src/agent/files/formats.ts';
import type { ItemValue } from '../src/agent/files/item-value.ts';
import { isPem } from '../src/agent/files/pem.ts';
import { FileRenderError } from '../src/agent/files/render-error.ts';

function spec(entry: Record<string, unknown>): FileSpec {
  return parseFileSpecs([{ path: 'out', ...entry }])[0] as FileSpec;
}
function secret(text: string | Buffer): ItemValue {
  return { kind: 'secret', value: Buffer.isBuffer(text) ? text : Buffer.from(text), version: 1 };
}
function config(value: unknown): ItemValue {
  return { kind: 'config', value: Buffer.from(JSON.stringify(value)), version: 1 };
}
function values(entries: Record<string, ItemValue>): Map<string, ItemValue> {
  return new Map(Object.entries(entries));
}

/** Sources the file in a real POSIX shell with `set -a` and returns the exported variables. */
function sourceInShell(file: string): Record<string, string> {
  const out = execFileSync('sh', ['-c', 'set -a; . "$0"; env -0', file], { env: {} });
  const vars: Record<string, string> = {};
  for (const entry of out.toString('utf8').split('\0')) {
    const cut = entry.indexOf('=');
    if (cut > 0) vars[entry.slice(0, cut)] = entry.slice(cut + 1);
  }
  return vars;
}

const TRICKY: Record<string, string> = {
  double_quotes: 'say "hello"',
  spaces: '  leading and trailing  ',
  dollar: '$HOME $PATH $(id) `id` ${unclosed',
  hash: 'a # not a comment #',
  backslashes: 'C:\\path\\to\\n\\t',
  newline: 'line one\nline two',
  single_quote_plain: "it's fine",
  empty: '',
  unicode: 'grüße ✓',
  mixed: `"q" $x #c \\ tail\\ end`,
};

/** A python3 that has python-dotenv (pip's, or Debian's python3-dotenv that .ci/run installs), or undefined. */
const PYTHON_WITH_DOTENV = ['python3', '/usr/bin/python3'].find((python) => {
  try {
    execFileSync(python, ['-c', 'import dotenv'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});

/** python-dotenv's `dotenv_values(file)` with its default settings (interpolation on). */
function pythonDotenv(file: string): Record<string, string> {
  const script = 'import json, sys, dotenv; print(json.dumps(dotenv.dotenv_values(sys.argv[1])))';
  return JSON.parse(execFileSync(PYTHON_WITH_DOTENV as string, ['-c', script, file], { env: { PATH: process.env.PATH ?? '' } }).toString('utf8')) as Record<string, string>;
}

test('env output reads back the same through python-dotenv (default settings, variable expansion on)', { skip: PYTHON_WITH_DOTENV ? false : 'python-dotenv is not installed (Debian: apt-get install python3-dotenv; .ci/run does)' }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'files-env-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = renderFile(spec({ items: ['app/settings'], format: 'env' }), values({ settings: config(TRICKY) }));
  const file = join(dir, '.env');
  writeFileSync(file, out);
  assert.deepEqual(pythonDotenv(file), Object.fromEntries(Object.entries(TRICKY).map(([k, v]) => [k.toUpperCase(), v])));
});

test('env output round-trips through sh (set -a; . file) and both dotenv parsers', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'files-env-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = renderFile(spec({ items: ['app/settings'], format: 'env' }), values({ settings: config(TRICKY) }));
  const file = join(dir, '.env');
  writeFileSync(file, out);
  const expected = Object.fromEntries(Object.entries(TRICKY).map(([k, v]) => [k.toUpperCase(), v]));
  const shell = sourceInShell(file);
  for (const [key, value] of Object.entries(expected)) assert.equal(shell[key], value, `sh reads ${key}`);
  assert.deepEqual(dotenvParse(out), expected);
  assert.deepEqual(dotenvParse(out, { fast: true }), expected);
});

test('env refuses values no quoting reads back identically, naming the key', () => {
  const refused: Record<string, string> = {
    quote_and_dollar: `it's $5`,
    quote_and_double: `it's "x"`,
    quote_and_backslash: `it's a \\`,
    quote_and_backtick: "it's `x`",
    carriage_return: 'a\r\nb',
    python_variable: 'pa${HOME}ss',
    python_variable_default: '${X:-y}',
    double_backslash: 'a\\\\b',
    trailing_backslash: 'tail\\',
    nul: 'a\0b',
  };
  for (const [key, value] of Object.entries(refused)) {
    assert.throws(
      () => renderFile(spec({ items: ['app/settings'], format: 'env' }), values({ settings: config({ [key]: value }) })),
      (e: unknown) => e instanceof FileRenderError && e.reason === 'unrepresentable' && e.message.includes(key.toUpperCase()) && !e.message.includes(value),
      key,
    );
  }
});

test('env names: several items are prefixed by NAME, nested keys joined by _, bad names and collisions refused', () => {
  const s = spec({ items: ['app/db-password', 'app/settings'], format: 'env' });
  const out = renderFile(s, values({ 'db-password': secret('pw'), settings: config({ log: { level: 'debug' }, 'max.conns': 5, hosts: ['a', 'b'] }) }));
  assert.deepEqual(dotenvParse(out), { DB_PASSWORD: 'pw', SETTINGS_LOG_LEVEL: 'debug', SETTINGS_MAX_CONNS: '5', SETTINGS_HOSTS: '["a","b"]' });
  const one = spec({ items: ['app/settings'], format: 'env' });
  assert.throws(() => renderFile(one, values({ settings: config({ 'a b': 1 }) })), /key "a b".*not \[A-Za-z_\]/);
  assert.throws(() => renderFile(one, values({ settings: config({ '9lives': 1 }) })), /9lives/);
  assert.throws(() => renderFile(one, values({ settings: config({ 'db-host': 1, db_host: 2 }) })), /"db-host" and "db_host" both give the env name DB_HOST/);
});

test('properties escapes per the Java format', () => {
  const out = renderFile(
    spec({ items: ['app/settings'], format: 'properties' }),
    values({ settings: config({ 'key with:sep=': ' lead', path: 'C:\\dir', tabs: 'a\tb\nc', u: 'é✓', bang: '!#x', db: { url: 'jdbc:pg://h:5432/db' } }) }),
  );
  assert.equal(
    out.toString(),
    [
      'key\\ with\\:sep\\==\\ lead',
      'path=C\\:\\\\dir',
      'tabs=a\\tb\\nc',
      'u=\\u00e9\\u2713',
      'bang=\\!\\#x',
      'db.url=jdbc\\:pg\\://h\\:5432/db',
      '',
    ].join('\n'),
  );
});

const CERT = `-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGVFeGFtcGxlMA0GCSqGSIb3DQEBCwUA\nAAAA\n-----END CERTIFICATE-----\n`;

test('pem accepts PEM blocks, concatenates several items and refuses anything else', () => {
  assert.ok(isPem(CERT));
  const out = renderFile(spec({ items: ['tls/cert', 'tls/chain'], format: 'pem' }), values({ cert: secret(CERT), chain: secret(CERT) }));
  assert.equal(out.toString(), `${CERT.trim()}\n${CERT.trim()}\n`);
  for (const bad of ['not a pem', `${CERT}trailing garbage`, '-----BEGIN X-----\n!!!\n-----END X-----', '-----BEGIN A-----\nAAAA\n-----END B-----']) {
    assert.throws(() => renderFile(spec({ items: ['tls/cert'], format: 'pem' }), values({ cert: secret(bad) })), (e: unknown) => e instanceof FileRenderError && e.reason === 'not_pem');
  }
});

test('json and yaml emit the merged value, nested under item names when there are several', async () => {
  const cfg = { log: { level: 'info' }, replicas: 3 };
  assert.deepEqual(JSON.parse(renderFile(spec({ items: ['app/settings'], format: 'json' }), values({ settings: config(cfg) })).toString()), cfg);
  const yamlSpec = spec({ items: ['app/settings', { item: 'app/db-password', as: 'db' }], format: 'yaml' });
  await loadFormats([yamlSpec]);
  const two = renderFile(yamlSpec, values({ settings: config(cfg), db: secret('pw') }));
  assert.deepEqual(yamlParse(two.toString()), { settings: cfg, db: 'pw' });
  assert.throws(() => renderFile(spec({ items: ['app/bin'], format: 'json' }), values({ bin: secret(Buffer.from([0xff, 0xfe])) })), /binary/);
});

test('raw writes secret bytes as they are', () => {
  const bytes = Buffer.from([0, 1, 2, 0xff]);
  assert.deepEqual(renderFile(spec({ items: ['app/bin'] }), values({ bin: secret(bytes) })), bytes);
});

test('templates escape per format and refuse missing items and keys', () => {
  const s = spec({ items: ['app/settings', 'app/db-password'], format: 'env', template: 'URL={{settings.db.url}}\nPW={{db-password}}\n' });
  const out = renderFile(s, values({ settings: config({ db: { url: 'pg://h/$db' } }), 'db-password': secret('p w"') }));
  assert.deepEqual(dotenvParse(out), { URL: 'pg://h/$db', PW: 'p w"' });
  const j = spec({ items: ['app/settings'], format: 'json', template: '{"url": {{settings.db.url}}, "all": {{settings}} }' });
  assert.deepEqual(JSON.parse(renderFile(j, values({ settings: config({ db: { url: 'a"b' } }) })).toString()), { url: 'a"b', all: { db: { url: 'a"b' } } });
  assert.throws(() => renderFile(j, values({ settings: config({ db: {} }) })), (e: unknown) => e instanceof FileRenderError && e.reason === 'missing_key' && /settings\.db\.url/.test(e.message));
  assert.throws(() => renderFile(j, values({})), (e: unknown) => e instanceof FileRenderError && e.reason === 'missing_item' && /app\/settings/.test(e.message));
  const sections = spec({ items: ['app/settings'], template: '{{#settings.hosts}}{{name}};{{/settings.hosts}}' });
  assert.equal(renderFile(sections, values({ settings: config({ hosts: [{ name: 'a' }, { name: 'b' }] }) })).toString(), 'a;b;');
  assert.throws(() => renderFile(sections, values({ settings: config({ hosts: [{ name: 'a' }, { nom: 'b' }] }) })), /"name"/);
});
