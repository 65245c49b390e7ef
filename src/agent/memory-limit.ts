/**
 * The container's memory limit as the OOM killer sees it: the agent's own
 * memory cgroup, found through `/proc/self/cgroup` and the cgroup mount in
 * `/proc/self/mountinfo` (never the root cgroup's file by a fixed path, which
 * outside a cgroup namespace is the node's, not the container's), read as v2
 * `memory.max` / `memory.current` / `memory.peak` or v1
 * `memory.limit_in_bytes` / `memory.usage_in_bytes` /
 * `memory.max_usage_in_bytes`. When no cgroup file can be read,
 * `process.constrainedMemory()` (libuv's view of the same limit) is the
 * fallback. A value of 2^60 or more means unlimited (v1 writes 2^63 rounded
 * down to a page).
 *
 * The cgroup usage counts what the kernel charges the container: the agent's
 * RSS and the tmpfs pages of memory-backed volumes it writes (rendered files).
 *
 * Every path is under an injectable `root`, so tests read fixture trees.
 */
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import type { Bytes } from '../shared/units.ts';

/** Limits at or above this are "no limit" (v1 reports 9223372036854771712; v2 writes "max"). */
export const UNLIMITED_BYTES = 2 ** 60;

export type MemoryLimitSource = 'cgroup-v2' | 'cgroup-v1' | 'constrained-memory' | 'flag' | 'none';

export interface MemoryLimit {
  /** The limit in bytes, or undefined when there is none. */
  readonly limit: Bytes | undefined;
  readonly source: MemoryLimitSource;
  /** The cgroup directory read (for the log), when one was found. */
  readonly cgroupDir: string | undefined;
  /** Current cgroup usage, when readable. */
  usage(): Bytes | undefined;
  /** Peak cgroup usage since the cgroup was made, when the kernel keeps it (v2 needs Linux 5.19). */
  peak(): Bytes | undefined;
}

export interface CgroupLocation {
  readonly version: 1 | 2;
  /** The cgroup's directory as seen from `/` (prefix it with the root to read it). */
  readonly dir: string;
}

interface MountEntry {
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly superOptions: readonly string[];
}

/** `/proc/self/mountinfo`: fields 4 (root in the fs) and 5 (mount point), then after ` - ` type, source, super options. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const cut = line.indexOf(' - ');
    if (cut === -1) continue;
    const head = line.slice(0, cut).split(' ');
    const tail = line.slice(cut + 3).split(' ');
    if (head.length < 5 || tail.length < 3) continue;
    const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
    out.push({ root: unescape(head[3] ?? '/'), mountPoint: unescape(head[4] ?? '/'), fsType: tail[0] ?? '', superOptions: (tail[2] ?? '').split(',') });
  }
  return out;
}

/** `/proc/self/cgroup`: the v2 path (`0::/path`) and the v1 memory controller's path (`N:memory[,...]:/path`). */
export function parseProcCgroup(text: string): { v2?: string; v1Memory?: string } {
  const out: { v2?: string; v1Memory?: string } = {};
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first === -1 || second === -1) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (line.slice(0, first) === '0' && controllers === '') out.v2 = path;
    else if (controllers.split(',').includes('memory')) out.v1Memory = path;
  }
  return out;
}

/** Where the mount shows `cgroupPath`: the mount point plus the path below the mount's own root. */
function underMount(mount: MountEntry, cgroupPath: string): string | undefined {
  const rel = posix.relative(mount.root, cgroupPath);
  // A cgroup outside the mounted subtree (a namespace's root mounted) cannot be reached through this mount.
  if (rel.startsWith('..')) return undefined;
  return posix.join(mount.mountPoint, rel);
}

/** The agent's memory cgroup directory: v1 when a v1 memory controller holds it, else v2. */
export function locateCgroup(procCgroup: string, mountinfo: string): CgroupLocation | undefined {
  const paths = parseProcCgroup(procCgroup);
  const mounts = parseMountinfo(mountinfo);
  if (paths.v1Memory !== undefined) {
    const mount = mounts.find((m) => m.fsType === 'cgroup' && m.superOptions.includes('memory'));
    const dir = mount && underMount(mount, paths.v1Memory);
    if (dir) return { version: 1, dir };
  }
  if (paths.v2 !== undefined) {
    const mount = mounts.find((m) => m.fsType === 'cgroup2');
    const dir = mount && underMount(mount, paths.v2);
    if (dir) return { version: 2, dir };
  }
  return undefined;
}

/** A limit file's value: undefined for `max` or anything ≥ 2^60 (unlimited), or unreadable text. */
export function parseLimitValue(text: string): Bytes | undefined {
  const trimmed = text.trim();
  if (trimmed === 'max' || !/^\d+$/.test(trimmed)) return undefined;
  const value = Number(trimmed);
  return value >= UNLIMITED_BYTES ? undefined : value;
}

function readValue(path: string): Bytes | undefined {
  try {
    return parseLimitValue(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
}

const FILES = {
  1: { limit: 'memory.limit_in_bytes', usage: 'memory.usage_in_bytes', peak: 'memory.max_usage_in_bytes' },
  2: { limit: 'memory.max', usage: 'memory.current', peak: 'memory.peak' },
} as const;

export interface DetectOptions {
  /** Prefix for /proc and /sys (a fixture tree in tests); default `/`. */
  readonly root?: string;
  /** libuv's constrained memory; default `process.constrainedMemory`. */
  readonly constrainedMemory?: () => number;
}

/** Reads the agent's memory limit once at start; usage and peak are read on demand (scrape, /readyz). */
export function detectMemoryLimit(options: DetectOptions = {}): MemoryLimit {
  const root = options.root ?? '/';
  let location: CgroupLocation | undefined;
  try {
    location = locateCgroup(readFileSync(join(root, 'proc/self/cgroup'), 'utf8'), readFileSync(join(root, 'proc/self/mountinfo'), 'utf8'));
  } catch {
    location = undefined;
  }
  if (location) {
    const files = FILES[location.version];
    const dir = join(root, location.dir);
    const limit = readValue(join(dir, files.limit));
    const usage = (): Bytes | undefined => readValue(join(dir, files.usage));
    const peak = (): Bytes | undefined => readValue(join(dir, files.peak));
    // A cgroup whose usage file is missing is not really ours (an empty fixture, a masked /sys): fall through.
    if (usage() !== undefined || limit !== undefined) {
      return { limit, source: limit === undefined ? 'none' : location.version === 2 ? 'cgroup-v2' : 'cgroup-v1', cgroupDir: location.dir, usage, peak };
    }
  }
  const constrained = (options.constrainedMemory ?? process.constrainedMemory)();
  const limit = constrained > 0 && constrained < UNLIMITED_BYTES ? constrained : undefined;
  return { limit, source: limit === undefined ? 'none' : 'constrained-memory', cgroupDir: undefined, usage: () => undefined, peak: () => undefined };
}

/** The same cgroup with the limit set by `--memory-limit` (the flag wins over detection). */
export function withLimitFlag(detected: MemoryLimit, limit: Bytes): MemoryLimit {
  return { ...detected, limit, source: 'flag' };
}
