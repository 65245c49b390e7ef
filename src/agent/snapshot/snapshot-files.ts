/**
 * The snapshot directory (`--snapshot-dir`): the key file and the snapshot,
 * both 0600, in the agent-private memory-backed volume. A snapshot is written
 * to a temporary file, fsynced, renamed over the last one and the directory
 * fsynced, so a reader sees the old snapshot or the new one, never a torn one
 * (a torn file that appears anyway is refused by its length and tag).
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { zeroize } from '../../shared/crypto.ts';
import { SNAPSHOT_KEY_BYTES } from './snapshot-format.ts';

export const SNAPSHOT_FILE = 'snapshot';
export const SNAPSHOT_KEY_FILE = 'snapshot.key';
const TEMP_FILE = 'snapshot.tmp';
const PRIVATE_MODE = 0o600;

export type KeyOrigin = 'read' | 'created' | 'replaced';

/**
 * The snapshot key: read from the directory, else made and written (0600,
 * exclusively). A key file of the wrong length is replaced: whatever it
 * sealed cannot be opened anyway.
 */
export async function loadSnapshotKey(dir: string): Promise<{ key: Buffer; origin: KeyOrigin }> {
  const path = join(dir, SNAPSHOT_KEY_FILE);
  let existing: Buffer | undefined;
  try {
    existing = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing?.length === SNAPSHOT_KEY_BYTES) return { key: existing, origin: 'read' };
  zeroize(existing);
  if (existing) await rm(path, { force: true });
  const key = randomBytes(SNAPSHOT_KEY_BYTES);
  const handle = await open(path, 'wx', PRIVATE_MODE);
  try {
    await handle.writeFile(key);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDir(dir);
  return { key, origin: existing ? 'replaced' : 'created' };
}

/** The snapshot's bytes, or undefined when there is none. */
export async function readSnapshotFile(dir: string): Promise<Buffer | undefined> {
  try {
    return await readFile(join(dir, SNAPSHOT_FILE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Removes a refused snapshot so it is neither retried nor left holding memory-backed pages. */
export async function discardSnapshotFile(dir: string): Promise<void> {
  await rm(join(dir, SNAPSHOT_FILE), { force: true });
}

/** Bytes the snapshot holds on the volume (0 without one). */
export async function snapshotFileBytes(dir: string): Promise<number> {
  try {
    return (await stat(join(dir, SNAPSHOT_FILE))).size;
  } catch {
    return 0;
  }
}

/**
 * Writes a snapshot atomically from `chunks` (ciphertext, produced as it is
 * written so no copy of the whole snapshot is held). Returns the bytes written.
 */
export async function writeSnapshotFile(dir: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<number> {
  const temp = join(dir, TEMP_FILE);
  await rm(temp, { force: true });
  const handle = await open(temp, 'wx', PRIVATE_MODE);
  let bytes = 0;
  try {
    for await (const chunk of chunks) {
      // A full volume can take part of a chunk without an error: write the rest, and a write that takes nothing is the error.
      for (let offset = 0; offset < chunk.length; ) {
        const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
        if (bytesWritten <= 0) throw Object.assign(new Error(`short write to ${temp} (volume full?)`), { code: 'ENOSPC' });
        offset += bytesWritten;
      }
      bytes += chunk.length;
    }
    await handle.sync();
    const written = (await handle.stat()).size;
    if (written !== bytes) throw Object.assign(new Error(`${temp} holds ${written} of ${bytes} bytes (volume full?)`), { code: 'ENOSPC' });
  } catch (err) {
    await handle.close();
    await rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  await rename(temp, join(dir, SNAPSHOT_FILE));
  await syncDir(dir);
  return bytes;
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on a directory (EINVAL); the rename is still atomic there.
  } finally {
    await handle.close();
  }
}
