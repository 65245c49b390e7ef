/**
 * One process at a time on an embedded store: a small lock database next to
 * the store file, held in `locking_mode=EXCLUSIVE` for as long as the store is
 * open. The lock is an OS file lock (SQLite's POSIX advisory lock), so the
 * kernel releases it when the holder dies — no stale pid file to clean up after
 * a crash or an OOM kill. Two servers on one directory would each fan out only
 * their own writes, and `rotate --kek` under a running server leaves the store
 * wrapped by neither KEK; both are refused here. `backup` and `verify` read the
 * store file itself and never take this lock.
 */
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { AppError } from '../../shared/errors.ts';

export const STORE_LOCK_FILE_NAME = 'config-sidecar.lock';
const LOCK_FILE_MODE = 0o600;

export interface StoreLock {
  readonly file: string;
  /** Releases the lock; calling it twice is harmless. */
  release(): void;
}

/** Takes the store lock in `dataDir` at once (no waiting), or throws naming the holder's directory. */
export function acquireStoreLock(dataDir: string): StoreLock {
  const file = join(dataDir, STORE_LOCK_FILE_NAME);
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(file, { timeout: 0 });
  } catch (err) {
    throw new AppError('store_unavailable', `Cannot create the store lock ${file}: ${(err as Error).message}. Check that --data-dir is writable by this user.`, { cause: err });
  }
  try {
    db.exec('PRAGMA locking_mode = EXCLUSIVE');
    // An exclusive transaction takes the write lock; in EXCLUSIVE locking mode it is kept after COMMIT.
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
  } catch (err) {
    db.close();
    const busy = ((err as { errcode?: number }).errcode ?? 0) & 0xff;
    if (busy === 5 /* BUSY */ || busy === 6 /* LOCKED */) {
      throw new AppError(
        'store_unavailable',
        `The store in ${dataDir} is held by another process (a running server, \`dev\` or \`rotate --kek\`; lock ${file}). ` +
          'Stop it first, or point --data-dir at another directory. `backup` works while a server runs.',
        { cause: err },
      );
    }
    throw new AppError('store_unavailable', `Cannot lock the store ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    chmodSync(file, LOCK_FILE_MODE);
  } catch {
    // The mode is hygiene only: the lock file holds no data.
  }
  let released = false;
  return {
    file,
    release() {
      if (released) return;
      released = true;
      db.close();
    },
  };
}
