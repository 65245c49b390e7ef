/**
 * How the agent writes into volumes it did not create. In a pod the socket and
 * files directories are emptyDirs the kubelet makes root-owned, group = the
 * pod's fsGroup, mode 2777 (setgid), and the agent runs as uid 65532 with no
 * capabilities: it may create entries there but must never change the mode or
 * owner of the directory itself, and everything it creates must keep the
 * directory's group so the app containers (in that group) can read it.
 */
import { constants } from 'node:fs';
import { access, chown, lchown, lstat, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SettingError } from '../shared/settings.ts';

/** The set-group-ID bit: entries created in such a directory inherit its group. */
export const SETGID_BIT = 0o2000;

/** Who the agent runs as, for error messages. */
export function describeIdentity(): string {
  const uid = process.getuid?.() ?? -1;
  const gid = process.getgid?.() ?? -1;
  const groups = process.getgroups?.() ?? [];
  return `uid ${uid} gid ${gid} groups [${groups.join(', ')}]`;
}

/** The nearest existing directory at or above `path` (a missing leaf is created by the agent). */
async function nearestExisting(path: string): Promise<string> {
  for (let dir = path; ; dir = dirname(dir)) {
    try {
      await stat(dir);
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(dir) === dir) return dir;
    }
  }
}

/**
 * Refuses to start when the agent cannot create entries in `dir` (or, when it
 * is missing, in the nearest existing parent): a clear error naming the path,
 * who the agent runs as and what the volume should look like, instead of a
 * publication retried forever while the startup probe restarts the sidecar.
 */
export async function checkWritableDir(dir: string, setting: string): Promise<void> {
  const target = await nearestExisting(dir);
  try {
    await access(target, constants.W_OK | constants.X_OK);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    let found = '';
    try {
      const st = await stat(target);
      found = ` (it is ${st.uid}:${st.gid} mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
    } catch {
      // The stat failing is itself the answer (e.g. a parent not traversable); the code below says so.
    }
    throw new SettingError(
      setting,
      `${target} is not writable by the agent, running as ${describeIdentity()}: ${code}${found}. ` +
        `Mount a volume there that the agent's group can write, as the kubelet makes an emptyDir for a pod with securityContext.fsGroup ` +
        `(root:<fsGroup> mode 2777, setgid), and run the agent with that fsGroup among its groups.`,
    );
  }
}

/** The group entries created in `dir` must carry, and whether the kernel already gives it (setgid). */
export interface DirGroup {
  readonly gid: number;
  readonly setgid: boolean;
}

export async function dirGroup(dir: string): Promise<DirGroup> {
  const st = await stat(dir);
  return { gid: st.gid, setgid: (st.mode & SETGID_BIT) !== 0 };
}

/**
 * Gives `path` (just created by the agent in a directory of group `group.gid`)
 * that group when it did not inherit it: chown to a group the process is in
 * needs no capability. Where that is not allowed (EPERM: the agent is not in
 * the group) the entry keeps the agent's group; the mode still decides.
 */
export async function keepGroup(path: string, group: DirGroup, options: { symlink?: boolean } = {}): Promise<void> {
  const st = await lstat(path);
  if (st.gid === group.gid) return;
  try {
    await (options.symlink ? lchown(path, -1, group.gid) : chown(path, -1, group.gid));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
  }
}
