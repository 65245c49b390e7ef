/**
 * Fixtures for the control-plane and store tests: temp data dirs, a random
 * KEK, a control plane on real SQLite driven by a ManualClock, a log sink, and
 * a byte scanner for "nothing readable on disk" checks.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { openControlPlane, openControlPlaneOn } from '../../src/server/control-plane-impl.ts';
import type { Store } from '../../src/server/store/store.ts';
import type { ControlPlane, ControlPlaneOptions } from '../../src/server/control-plane.ts';
import { kekFromBase64, type LocalKekProvider } from '../../src/server/kek.ts';
import { ManualClock } from '../../src/shared/clock.ts';
import { createLogger } from '../../src/shared/logger.ts';

export const TEST_ENVIRONMENTS = ['base', 'dev', 'staging', 'prod'] as const;
export const DAY_MS = 86_400_000;

/** A fresh temp directory removed after the test. */
export async function tempDir(t: TestContext, prefix = 'cs-store-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export function randomKekBase64(): string {
  return randomBytes(32).toString('base64');
}

export function kekOf(base64: string): LocalKekProvider {
  return kekFromBase64(base64, 'CONFIG_SIDECAR_KEK');
}

/** Log lines captured in memory, so tests can assert what was (not) logged. */
export class LogSink {
  readonly lines: string[] = [];
  write(line: string): void {
    this.lines.push(line);
  }
  get text(): string {
    return this.lines.join('');
  }
}

export interface TestPlane {
  readonly plane: ControlPlane;
  readonly clock: ManualClock;
  readonly logs: LogSink;
  readonly options: ControlPlaneOptions;
}

/**
 * Where a control plane under test keeps its data: SQLite in a temp dir, or
 * (test/helpers/store-engines.ts) a fresh PostgreSQL database.
 */
export interface PlaneEngine {
  readonly name: string;
  /** A reason to skip, or undefined to run. */
  readonly skip: () => string | undefined;
  /** A fresh, empty location: a data dir or a database URL. */
  location(t: TestContext): Promise<string>;
  /** Opens the store at `location`; undefined means "the engine options.dataDir selects". */
  openStore?(location: string): Promise<Store>;
  teardown(): Promise<void>;
}

export const sqlitePlane: PlaneEngine = {
  name: 'sqlite',
  skip: () => undefined,
  location: (t) => tempDir(t),
  teardown: async () => undefined,
};

/** Opens a control plane at `location` (a data dir unless `engine` says otherwise), closed after the test. */
export async function openTestPlane(
  t: TestContext,
  location: string,
  overrides: Partial<ControlPlaneOptions> = {},
  engine: PlaneEngine = sqlitePlane,
): Promise<TestPlane> {
  const clock = overrides.clock instanceof ManualClock ? overrides.clock : new ManualClock();
  const logs = new LogSink();
  const options: ControlPlaneOptions = {
    dataDir: location,
    kek: kekOf(randomKekBase64()),
    environments: TEST_ENVIRONMENTS,
    maxVersionsPerItem: 20,
    keyMaxAge: 90 * DAY_MS,
    retainEvents: 100_000,
    clock,
    logger: createLogger({ component: 'test', level: 'debug', destination: logs }),
    ...overrides,
  };
  const plane = engine.openStore ? await openControlPlaneOn(await engine.openStore(location), options) : await openControlPlane(options);
  t.after(() => plane.close());
  return { plane, clock, logs, options };
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if ((await stat(path)).isFile()) out.push(path);
  }
  return out;
}

/**
 * Every (file, needle label) where a needle's bytes, or its hex or base64
 * spelling, occur in any file under `dir` (the -wal and -shm files included).
 */
export async function scanForNeedles(dir: string, needles: ReadonlyArray<{ label: string; bytes: Buffer }>): Promise<{ files: string[]; hits: string[] }> {
  const files = await filesUnder(dir);
  const hits: string[] = [];
  for (const file of files) {
    const content = await readFile(file);
    for (const { label, bytes } of needles) {
      const spellings = [bytes, Buffer.from(bytes.toString('hex')), Buffer.from(bytes.toString('base64'))];
      if (spellings.some((s) => content.includes(s))) hits.push(`${file}: ${label}`);
    }
  }
  return { files, hits };
}

