/**
 * What the embedded store checks about its file before serving from it. Only
 * a missing file means "new store": an empty or headerless file, or one whose
 * pages fail SQLite's structural check, stops the open with a message naming
 * the file, so a truncated or damaged store is never replaced by an empty one
 * (revisions restarting at 1) nor served until it answers 500s.
 *
 * Start-up runs `PRAGMA quick_check`: every page of every table and index is
 * read once and its b-tree structure, cell and record format, free list and
 * NOT NULL constraints are verified; it skips the index-to-table cross-check,
 * which is what makes the full `PRAGMA integrity_check` several times slower.
 * The full check is `config-sidecar verify` (it reads the file, never writes).
 */
import { openSync, readSync, closeSync, statSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { AppError } from '../../shared/errors.ts';

/** The first 16 bytes of every SQLite 3 database file. */
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
/** Problems listed in a refusal; the rest are counted. */
const MAX_PROBLEMS_SHOWN = 5;

export type StoreFileState = 'missing' | 'present';

function damaged(file: string, what: string): AppError {
  return new AppError(
    'store_unavailable',
    `The store file ${file} ${what}. Refusing to start on it (a new empty store would restart revisions at 1 and lose every item). ` +
      'Restore the file from a backup, or move it away to start an empty store on purpose.',
  );
}

/** Looks at the file before SQLite opens it: missing is fine, empty or not SQLite is refused. */
export function checkStoreFileHeader(file: string): StoreFileState {
  let size: number;
  try {
    size = statSync(file).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw new AppError('store_unavailable', `Cannot read the store file ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (size === 0) throw damaged(file, 'is empty (0 bytes)');
  const header = Buffer.alloc(SQLITE_HEADER.length);
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    readSync(fd, header, 0, header.length, 0);
  } catch (err) {
    throw new AppError('store_unavailable', `Cannot read the store file ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (!header.equals(SQLITE_HEADER)) throw damaged(file, 'does not start with the SQLite header (it is not a database, or its first page is overwritten)');
  return 'present';
}


/** Runs `PRAGMA <check>` on an open connection; the problems SQLite reports, empty when the file is sound. */
export function runCheck(db: DatabaseSync, check: 'quick_check' | 'integrity_check'): string[] {
  const rows = db.prepare(`PRAGMA ${check}`).all() as Array<Record<string, unknown>>;
  const problems = rows.map((row) => String(Object.values(row)[0]));
  return problems.length === 1 && problems[0] === 'ok' ? [] : problems;
}

/** The start-up check: refuses a file whose pages fail `quick_check`. */
export function quickCheckStore(db: DatabaseSync, file: string): void {
  let problems: string[];
  try {
    problems = runCheck(db, 'quick_check');
  } catch (err) {
    // A file damaged badly enough fails the check itself ("database disk image is malformed").
    throw damaged(file, `fails SQLite's quick_check (${(err as Error).message})`);
  }
  if (problems.length > 0) throw damaged(file, `fails SQLite's quick_check: ${describeProblems(problems)}; run \`config-sidecar verify\` for the full check`);
}

export function describeProblems(problems: readonly string[]): string {
  const shown = problems.slice(0, MAX_PROBLEMS_SHOWN).join('; ');
  return problems.length > MAX_PROBLEMS_SHOWN ? `${shown}; and ${problems.length - MAX_PROBLEMS_SHOWN} more` : shown;
}

/**
 * The full check behind `config-sidecar verify`: `PRAGMA integrity_check` on a
 * read-only connection (a snapshot, so it runs beside a server). Throws when
 * the file is missing or not SQLite; otherwise the problems found, empty when sound.
 */
export function verifyStoreFile(file: string): { readonly problems: string[]; readonly pages: number } {
  if (checkStoreFileHeader(file) === 'missing') {
    throw new AppError('not_found', `There is no store file ${file}; check --data-dir (\`dev\` keeps its store in .config-sidecar/server).`);
  }
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(file, { readOnly: true });
  } catch (err) {
    throw new AppError('store_unavailable', `Cannot open the store file ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const pages = Number((db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count);
    try {
      return { problems: runCheck(db, 'integrity_check'), pages };
    } catch (err) {
      return { problems: [(err as Error).message], pages };
    }
  } catch (err) {
    return { problems: [(err as Error).message], pages: 0 };
  } finally {
    db.close();
  }
}
