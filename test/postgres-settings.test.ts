/**
 * The PostgreSQL settings without a database: the --database-url checks, the
 * password never shown, start-up failures mapped to errors naming the setting,
 * and the pool-size and retention flags with their env twins.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SettingError } from '../src/shared/settings.ts';
import { parseServerSettings } from '../src/server/settings.ts';
import { checkPostgresUrl, DATABASE_URL_SETTING, describeTarget, isPgUnavailable, postgresStartError, redactUrl } from '../src/server/store/postgres-url.ts';

const kek = randomBytes(32).toString('base64');
const URL_WITH_PASSWORD = 'postgres://cs:p%40ss-w0rd@db.internal:6432/config?sslmode=require';

test('--database-url: postgres and postgresql URLs pass; anything else names the setting and shows the form', () => {
  assert.equal(checkPostgresUrl(URL_WITH_PASSWORD), URL_WITH_PASSWORD);
  assert.equal(checkPostgresUrl('postgresql://cs@localhost/config?host=/run/postgresql'), 'postgresql://cs@localhost/config?host=/run/postgresql');
  for (const bad of ['db.internal:5432', 'mysql://cs:pw@db/config', 'postgres:///config']) {
    assert.throws(
      () => checkPostgresUrl(bad),
      (e: unknown) => e instanceof SettingError && e.setting === DATABASE_URL_SETTING && /postgres:\/\/USER:PASSWORD@HOST:5432\/DATABASE/.test(e.message),
      bad,
    );
  }
});

test('the password is redacted, raw and percent-decoded; the target is host:port/database', () => {
  assert.equal(redactUrl(`failed for ${URL_WITH_PASSWORD} and p@ss-w0rd`, URL_WITH_PASSWORD), 'failed for postgres://cs:***@db.internal:6432/config?sslmode=require and ***');
  assert.equal(redactUrl('no secret here', 'postgres://cs@db/config'), 'no secret here');
  assert.equal(describeTarget(URL_WITH_PASSWORD), 'db.internal:6432/config');
  assert.equal(describeTarget('postgresql://u@localhost/x?host=%2Ftmp%2Fpg&port=5433'), '/tmp/pg:5433/x');
});

test('start-up failures become SettingErrors naming --database-url; other errors pass through', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:6432'), { code: 'ECONNREFUSED' });
  const unreachable = postgresStartError(refused, URL_WITH_PASSWORD);
  assert.ok(unreachable instanceof SettingError);
  assert.match(unreachable.message, /--database-url \(CONFIG_SIDECAR_DATABASE_URL\).*cannot reach PostgreSQL at db\.internal:6432\/config/);
  const badLogin = Object.assign(new Error('password authentication failed for user "cs" (p@ss-w0rd)'), { code: '28P01' });
  const login = postgresStartError(badLogin, URL_WITH_PASSWORD);
  assert.match(login?.message ?? '', /refused the connection.*check the user, password and database name/);
  assert.doesNotMatch(login?.message ?? '', /p@ss-w0rd/);
  assert.match(postgresStartError(Object.assign(new Error('database "config" does not exist'), { code: '3D000' }), URL_WITH_PASSWORD)?.message ?? '', /refused/);
  assert.equal(postgresStartError(new Error('Migration 1_init changed after it was applied'), URL_WITH_PASSWORD), undefined);
});

test('what counts as "database unavailable" (503) and what does not', () => {
  for (const err of [
    Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
    Object.assign(new Error('too many connections'), { code: '53300' }),
    Object.assign(new Error('connect ENOENT /tmp/.s.PGSQL.5432'), { code: 'ENOENT' }),
    new Error('timeout exceeded when trying to connect'),
    new Error('Connection terminated unexpectedly'),
  ]) {
    assert.equal(isPgUnavailable(err), true, err.message);
  }
  assert.equal(isPgUnavailable(Object.assign(new Error('duplicate key'), { code: '23505' })), false);
  assert.equal(isPgUnavailable(Object.assign(new Error('syntax error'), { code: '42601' })), false);
});

test('--database-pool-size and --retain-age: defaults, units, and bad values naming the flag', () => {
  const defaults = parseServerSettings({ kek });
  assert.equal(defaults.databasePoolSize, 10);
  assert.equal(defaults.retainAge, undefined, 'by count only unless set');
  const set = parseServerSettings({ kek, databaseUrl: URL_WITH_PASSWORD, databasePoolSize: '25', retainAge: '7d' });
  assert.equal(set.databasePoolSize, 25);
  assert.equal(set.retainAge, 7 * 86_400_000);
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ databasePoolSize: '0' }, /--database-pool-size \(CONFIG_SIDECAR_DATABASE_POOL_SIZE\)/],
    [{ databasePoolSize: 'many' }, /--database-pool-size/],
    [{ retainAge: 'a week' }, /--retain-age \(CONFIG_SIDECAR_RETAIN_AGE\)/],
    [{ databaseUrl: 'not a url' }, /--database-url \(CONFIG_SIDECAR_DATABASE_URL\)/],
  ];
  for (const [raw, message] of bad) {
    assert.throws(() => parseServerSettings({ kek, ...raw }), (e: unknown) => e instanceof SettingError && message.test(e.message), JSON.stringify(raw));
  }
});
