/**
 * The kubelet's atomic writer (pkg/volume/util/atomic_writer.go), for one
 * `--files-dir`:
 *
 *   files-dir/
 *     ..2026_11_23_11_55_08.a1B2c3/   one complete snapshot (the current one)
 *       app/.env
 *       tls.pem
 *     ..data -> ..2026_11_23_11_55_08.a1B2c3
 *     app -> ..data/app                user-visible paths: symlinks through ..data
 *     tls.pem -> ..data/tls.pem
 *
 * Each publication builds a complete new snapshot directory (files whose bytes
 * and mode did not change are hard-linked from the previous snapshot), fsyncs
 * the files and directories, points `..data_tmp` at it and renames that over
 * `..data` (rename(2) is atomic), then fixes the top-level links and removes
 * the old snapshot. A reader that resolves `..data` once and reads several
 * files under it sees one publication. When any step before the rename fails
 * (no space, permission), the new snapshot is removed and the last good one
 * stays visible; the caller gets the error.
 *
 * In a pod `--files-dir` is a kubelet-made emptyDir (root:<fsGroup>, 2777,
 * setgid) and the agent runs as 65532 with no capabilities: the writer never
 * changes the mode or owner of a directory it did not create, and every entry
 * it creates keeps the files directory's group (setgid inheritance, else a
 * chown to it), so files are readable by the pod's group (volume-access.ts).
 *
 * All file-system calls go through `WriterFs`, so a test can inject ENOSPC or
 * EACCES; the pod harness (test/helpers/pod-harness.ts) runs the real ones
 * as the pod does.
 */
import * as fsp from 'node:fs/promises';
import { constants } from 'node:fs';
import { dirname, join } from 'node:path';
import { dirGroup, keepGroup, SETGID_BIT, type DirGroup } from '../volume-access.ts';

export const DATA_DIR_NAME = '..data';
export const DATA_DIR_TMP_NAME = '..data_tmp';
/** Snapshot directories and our symlinks are traversable by the shared group; files carry their own mode. */
const DIR_MODE = 0o755;

/** One rendered file: its bytes and permission bits. */
export interface FileContent {
  readonly data: Buffer;
  readonly mode: number;
}

/** The file-system operations the writer uses; override one to inject a failure. */
export interface WriterFs {
  /** Creates a new file with exactly `mode` (whatever the umask), writes `data` and fsyncs it. */
  writeFile(path: string, data: Buffer, mode: number): Promise<void>;
  /**
   * Creates a directory (and missing parents) when missing; a leaf it created gets exactly
   * `mode` (plus setgid when its parent has it). An existing directory is left as it is.
   */
  mkdir(path: string, mode: number): Promise<void>;
  /** A new unique directory, traversable by the group (0755, plus setgid when its parent has it). */
  mkdtemp(prefix: string): Promise<string>;
  link(existing: string, path: string): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  readlink(path: string): Promise<string>;
  readFile(path: string): Promise<Buffer>;
  lstatMode(path: string): Promise<{ mode: number; isSymbolicLink: boolean; isDirectory: boolean }>;
  readdir(path: string): Promise<string[]>;
  rm(path: string): Promise<void>;
  fsyncDir(path: string): Promise<void>;
}

/** The group of the directory holding `path`: what a new entry there must carry. */
const parentGroup = (path: string): Promise<DirGroup> => dirGroup(dirname(path));

/** chmod that keeps the parent's setgid on a directory (chmod(2) without the bit clears it). */
async function chmodDir(path: string, mode: number, group: DirGroup): Promise<void> {
  await fsp.chmod(path, group.setgid ? mode | SETGID_BIT : mode);
}

export const nodeWriterFs: WriterFs = {
  async writeFile(path, data, mode) {
    const group = await parentGroup(path);
    const handle = await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    try {
      await handle.writeFile(data);
      await keepGroup(path, group);
      // The process umask may have cleared bits the operator asked for.
      await handle.chmod(mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
  async mkdir(path, mode) {
    const group = await parentGroup(path).catch(() => undefined);
    const created = await fsp.mkdir(path, { recursive: true, mode });
    // Never touch a directory we did not create: in a pod it is the kubelet's (EPERM).
    if (created === undefined) return;
    const leafGroup = group ?? (await parentGroup(path));
    await keepGroup(path, leafGroup);
    // The umask may have cleared bits the shared group needs to traverse.
    await chmodDir(path, mode, leafGroup);
  },
  async mkdtemp(prefix) {
    const group = await parentGroup(prefix);
    const path = await fsp.mkdtemp(prefix);
    await keepGroup(path, group);
    // mkdtemp creates 0700: the app containers' group could not reach the files.
    await chmodDir(path, DIR_MODE, group);
    return path;
  },
  link: (existing, path) => fsp.link(existing, path),
  async symlink(target, path) {
    await fsp.symlink(target, path);
    await keepGroup(path, await parentGroup(path), { symlink: true });
  },
  rename: (from, to) => fsp.rename(from, to),
  readlink: (path) => fsp.readlink(path),
  readFile: (path) => fsp.readFile(path),
  async lstatMode(path) {
    const st = await fsp.lstat(path);
    return { mode: st.mode & 0o7777, isSymbolicLink: st.isSymbolicLink(), isDirectory: st.isDirectory() };
  },
  readdir: (path) => fsp.readdir(path),
  rm: (path) => fsp.rm(path, { recursive: true, force: true }),
  async fsyncDir(path) {
    const handle = await fsp.open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
};

/** A publication that failed before `..data` moved: nothing visible changed. */
export class PublishError extends Error {
  override readonly name = 'PublishError';
  /** errno code (`ENOSPC`, `EACCES`, ...) when the cause had one. */
  readonly code: string;
  constructor(step: string, cause: unknown) {
    const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
    super(`publishing files failed at ${step} (${code}); the previous files stay in place`, { cause });
    this.code = code;
  }
}

export interface PublishResult {
  /** False when the payload equalled what is on disk and nothing was written. */
  readonly changed: boolean;
  /** The snapshot directory name now behind `..data`. */
  readonly snapshot: string | undefined;
  readonly written: readonly string[];
  readonly linked: readonly string[];
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/** `..2026_11_23_11_55_08.` like the kubelet's `..2006_01_02_15_04_05.`. */
function snapshotPrefix(now: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `..${now.getUTCFullYear()}_${p(now.getUTCMonth() + 1)}_${p(now.getUTCDate())}_${p(now.getUTCHours())}_${p(now.getUTCMinutes())}_${p(now.getUTCSeconds())}.`;
}

function topLevel(path: string): string {
  const cut = path.indexOf('/');
  return cut === -1 ? path : path.slice(0, cut);
}

/**
 * What the renderer publishes through: the atomic writer on a real volume, or
 * an in-memory writer in the freshness simulation (test/helpers/freshness-sim.ts).
 */
export interface FilePublisher {
  /** Makes `files` the complete visible set in one step; resolves once it is visible. */
  publish(files: ReadonlyMap<string, FileContent>): Promise<PublishResult>;
}

export interface AtomicWriterOptions {
  readonly fs?: WriterFs;
  readonly now?: () => Date;
}

export class AtomicWriter implements FilePublisher {
  readonly dir: string;
  readonly #fs: WriterFs;
  readonly #now: () => Date;
  /** Publications are serialised: two snapshots must never race for `..data`. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(dir: string, options: AtomicWriterOptions = {}) {
    this.dir = dir;
    this.#fs = options.fs ?? nodeWriterFs;
    this.#now = options.now ?? (() => new Date());
  }

  /** The snapshot directory `..data` points at, if any. */
  async currentSnapshot(): Promise<string | undefined> {
    try {
      return await this.#fs.readlink(join(this.dir, DATA_DIR_NAME));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Makes `files` (relative path → content) the complete visible set: paths
   * absent from it disappear. Resolves once the new snapshot is visible.
   */
  publish(files: ReadonlyMap<string, FileContent>): Promise<PublishResult> {
    const run = this.#queue.then(() => this.#publish(files));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #step<T>(step: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new PublishError(step, err);
    }
  }

  /** What the current snapshot holds for a path, or undefined (missing, or changed by hand). */
  async #existing(snapshotDir: string | undefined, path: string): Promise<{ data: Buffer; mode: number } | undefined> {
    if (snapshotDir === undefined) return undefined;
    try {
      const full = join(snapshotDir, path);
      const st = await this.#fs.lstatMode(full);
      if (st.isSymbolicLink || st.isDirectory) return undefined;
      return { data: await this.#fs.readFile(full), mode: st.mode };
    } catch {
      return undefined;
    }
  }

  async #publish(files: ReadonlyMap<string, FileContent>): Promise<PublishResult> {
    const fs = this.#fs;
    await this.#step('creating the files directory', () => fs.mkdir(this.dir, DIR_MODE));
    const old = await this.#step('reading ..data', () => this.currentSnapshot());
    const oldDir = old === undefined ? undefined : join(this.dir, old);

    // Compare against the disk, not memory: a file changed by hand must be rewritten, never linked.
    const same = new Map<string, boolean>();
    for (const [path, content] of files) {
      const existing = await this.#existing(oldDir, path);
      same.set(path, existing !== undefined && existing.mode === content.mode && existing.data.equals(content.data));
      existing?.data.fill(0); // a copy of a secret: do not leave it to the GC
    }
    const oldPaths = oldDir === undefined ? [] : await this.#listFiles(oldDir);
    const linksOk = await this.#topLinksOk(files);
    if (oldDir !== undefined && linksOk && [...same.values()].every(Boolean) && oldPaths.length === files.size) {
      return { changed: false, snapshot: old, written: [], linked: [] };
    }

    const snapshotDir = await this.#step('creating the snapshot directory', () => fs.mkdtemp(join(this.dir, snapshotPrefix(this.#now()))));
    const snapshot = snapshotDir.slice(this.dir.length + 1);
    const written: string[] = [];
    const linked: string[] = [];
    try {
      const dirs = new Set<string>([snapshotDir]);
      for (const [path, content] of files) {
        const target = join(snapshotDir, path);
        const parent = dirname(target);
        // One level at a time, so every level gets DIR_MODE.
        const missing: string[] = [];
        for (let d = parent; !dirs.has(d); d = dirname(d)) missing.unshift(d);
        for (const d of missing) {
          await this.#step(`creating the directory of ${path}`, () => fs.mkdir(d, DIR_MODE));
          dirs.add(d);
        }
        if (same.get(path) === true && oldDir !== undefined) {
          await this.#step(`linking ${path}`, () => fs.link(join(oldDir, path), target));
          linked.push(path);
        } else {
          await this.#step(`writing ${path}`, () => fs.writeFile(target, content.data, content.mode));
          written.push(path);
        }
      }
      // Deepest first, so each directory entry is durable before its parent's.
      for (const d of [...dirs].sort((a, b) => b.length - a.length)) await this.#step('syncing the snapshot', () => fs.fsyncDir(d));
      const tmp = join(this.dir, DATA_DIR_TMP_NAME);
      await this.#step('preparing ..data_tmp', () => fs.rm(tmp));
      await this.#step('linking ..data_tmp', () => fs.symlink(snapshot, tmp));
      await this.#step('renaming ..data_tmp over ..data', () => fs.rename(tmp, join(this.dir, DATA_DIR_NAME)));
    } catch (err) {
      await fs.rm(snapshotDir).catch(() => undefined);
      await fs.rm(join(this.dir, DATA_DIR_TMP_NAME)).catch(() => undefined);
      throw err;
    }
    // Visible now. The rest tidies the top level; a failure here leaves the new files readable through ..data.
    await this.#step('syncing the files directory', () => fs.fsyncDir(this.dir));
    await this.#step('updating the user-visible links', () => this.#updateTopLinks(files));
    if (oldDir !== undefined && old !== snapshot) await fs.rm(oldDir).catch(() => undefined);
    await this.#removeStrays(snapshot);
    return { changed: true, snapshot, written, linked };
  }

  async #listFiles(root: string, prefix = ''): Promise<string[]> {
    const out: string[] = [];
    let names: string[];
    try {
      names = await this.#fs.readdir(join(root, prefix));
    } catch {
      return out;
    }
    for (const name of names) {
      const rel = prefix === '' ? name : `${prefix}/${name}`;
      const st = await this.#fs.lstatMode(join(root, rel)).catch(() => undefined);
      if (st?.isDirectory) out.push(...(await this.#listFiles(root, rel)));
      else out.push(rel);
    }
    return out;
  }

  async #topLinksOk(files: ReadonlyMap<string, FileContent>): Promise<boolean> {
    for (const top of new Set([...files.keys()].map(topLevel))) {
      const target = await this.#fs.readlink(join(this.dir, top)).catch(() => undefined);
      if (target !== `${DATA_DIR_NAME}/${top}`) return false;
    }
    return true;
  }

  /** Each top-level name points through `..data`; names no longer published are removed. */
  async #updateTopLinks(files: ReadonlyMap<string, FileContent>): Promise<void> {
    const fs = this.#fs;
    const wanted = new Set([...files.keys()].map(topLevel));
    for (const top of wanted) {
      const path = join(this.dir, top);
      const target = `${DATA_DIR_NAME}/${top}`;
      const current = await fs.readlink(path).catch(() => undefined);
      if (current === target) continue;
      // Something else is there (a file written by hand, a foreign link): replace it atomically.
      const tmp = join(this.dir, `${DATA_DIR_TMP_NAME}.${top}`);
      await fs.rm(tmp);
      await fs.symlink(target, tmp);
      await fs.rename(tmp, path).catch(async (err: unknown) => {
        // rename cannot replace a directory; remove it and retry once.
        await fs.rm(path);
        await fs.rename(tmp, path).catch(() => {
          throw err;
        });
      });
    }
    for (const name of await fs.readdir(this.dir)) {
      if (name.startsWith('..') || wanted.has(name)) continue;
      const target = await fs.readlink(join(this.dir, name)).catch(() => undefined);
      // Only remove our own links; anything else in the directory is not ours to delete.
      if (target === `${DATA_DIR_NAME}/${name}`) await fs.rm(join(this.dir, name));
    }
  }

  /** Snapshots left by a crash between mkdtemp and the swap. */
  async #removeStrays(current: string): Promise<void> {
    const names = await this.#fs.readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      if (/^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\./.test(name) && name !== current) await this.#fs.rm(join(this.dir, name)).catch(() => undefined);
    }
  }
}
