/**
 * The server issue's test files, run again with every server process on
 * PostgreSQL: one throwaway cluster for all of them, a database per server
 * (test/helpers/postgres-backend.ts), the same test code. Each file runs in a
 * nested `node --test` and is reported here as one test; its output is shown
 * when it fails. Skipped, with the reason shown, only when PostgreSQL is not
 * installed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TEST_POSTGRES_ENV } from './helpers/postgres-backend.ts';
import { findPostgresBin, startThrowawayPostgres, type ThrowawayPostgres } from './helpers/store-postgres.ts';

const SKIP = findPostgresBin() ? false : 'PostgreSQL is not installed (no initdb/pg_ctl found); install postgresql to run the server suite on it';
const REPO = fileURLToPath(new URL('..', import.meta.url));
const FILE_TIMEOUT_MS = 120_000;

/** Server test files that start real servers through test/helpers/server-process.ts. */
const SERVER_FILES = ['server-rest', 'server-list-paging', 'server-watch', 'server-errors', 'server-keys', 'server-shutdown', 'server-auth', 'server-observability', 'server-tls'];
/** Tests that reach into the SQLite file directly; their PostgreSQL twins are in test/postgres-replicas.test.ts. */
const SQLITE_FILE_TESTS = ['a corrupted row answers 500'];

function runFile(file: string, adminUrl: string): Promise<{ code: number | null; output: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, [TEST_POSTGRES_ENV]: adminUrl };
  // Set by the outer runner for its children; the nested runner must report on its own.
  delete env.NODE_TEST_CONTEXT;
  const child = spawn(
    process.execPath,
    ['--test', '--test-reporter=spec', `--test-timeout=${FILE_TIMEOUT_MS}`, ...SQLITE_FILE_TESTS.map((p) => `--test-skip-pattern=${p}`), `test/${file}.test.ts`],
    { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, output })));
}

describe('the server test suite on PostgreSQL', { skip: SKIP }, () => {
  let cluster: ThrowawayPostgres;
  before(async () => {
    cluster = await startThrowawayPostgres();
  });
  after(() => cluster?.stop());

  for (const file of SERVER_FILES) {
    test(`test/${file}.test.ts passes with every server on PostgreSQL`, async () => {
      const { code, output } = await runFile(file, cluster.adminUrl);
      assert.equal(code, 0, `test/${file}.test.ts failed on PostgreSQL:\n${output.slice(-6000)}`);
      const passed = Number(/ℹ pass (\d+)/.exec(output)?.[1] ?? 0);
      assert.ok(passed > 0, `no test ran:\n${output.slice(-2000)}`);
      const databases = await cluster.query(cluster.adminUrl, "SELECT count(*) AS n FROM pg_database WHERE datname LIKE 't\\_%'");
      assert.ok(Number(databases[0]?.n) > 0, 'the servers ran on PostgreSQL databases');
    });
  }
});
