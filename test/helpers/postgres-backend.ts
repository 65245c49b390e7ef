/**
 * Runs the server test files against PostgreSQL: when the environment names a
 * running cluster (test/postgres-server-suite.test.ts starts one and runs the
 * server files with it), every server process the helpers start gets a
 * database of its own, and the same data dir gets the same database again
 * (restart tests). Without it, servers use the embedded store as usual.
 */
import { createDatabaseOn } from './store-postgres.ts';

/** The admin URL of a running throwaway cluster; set only by the PostgreSQL server-suite runner. */
export const TEST_POSTGRES_ENV = 'CONFIG_SIDECAR_TEST_POSTGRES_ADMIN_URL';

const databases = new Map<string, Promise<string>>();

/** Extra environment for a server on `dataDir`: its database URL when the suite runs on PostgreSQL, else nothing. */
export async function backendEnvFor(dataDir: string): Promise<Record<string, string>> {
  const adminUrl = process.env[TEST_POSTGRES_ENV];
  if (!adminUrl) return {};
  let url = databases.get(dataDir);
  if (!url) {
    url = createDatabaseOn(adminUrl);
    databases.set(dataDir, url);
  }
  return { CONFIG_SIDECAR_DATABASE_URL: await url };
}
