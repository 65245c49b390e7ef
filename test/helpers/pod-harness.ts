/**
 * The pod harness: runs project processes as a pod runs them, so tests see
 * what a pod does to the agent.
 *
 * - Identities: the agent (65532, groups [fsGroup]), an app container (another
 *   uid in the fsGroup) and a stranger (in no shared group). A process runs as
 *   one through `setpriv` (util-linux) with every capability dropped (inheritable
 *   and bounding sets) and `no_new_privs`.
 * - Volumes as the kubelet makes an emptyDir for a pod with an fsGroup: owned
 *   by root, group = fsGroup, mode 2777 (setgid); memory-backed (tmpfs) where
 *   the pod's are, when the harness may mount.
 * - Reachability: uid 65532 must be able to traverse to the project's files
 *   (node, src/, node_modules/). A checkout under a 0700 directory (CI's
 *   `mktemp -d`) is staged, hard-linked where possible, into a 0755 directory;
 *   when that fails the error says what to do.
 *
 * Changing uid needs root; elsewhere `podSupport()` says why, and the tests
 * that need it skip with that reason visible (callers pass it to `t.skip`).
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { constants, existsSync, statSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PodIdentity {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups (the pod's fsGroup and supplementalGroups). */
  readonly groups: readonly number[];
}

export interface PodSecurity {
  readonly fsGroup: number;
  readonly agent: PodIdentity;
  readonly app: PodIdentity;
  readonly stranger: PodIdentity;
}

/** The distroless "nonroot" user the agent image runs as. */
export const AGENT_UID = 65532;
/** The acceptance pod: an app pod with fsGroup 2000, the agent injected as 65532. */
export const DEFAULT_FS_GROUP = 2000;
const APP_UID = 1000;
const STRANGER_UID = 4242;

/** A pod's identities for `fsGroup` (the agent's own uid/gid from the injected securityContext when given). */
export function podSecurity(fsGroup = DEFAULT_FS_GROUP, agent: { uid: number; gid: number } = { uid: AGENT_UID, gid: AGENT_UID }): PodSecurity {
  return {
    fsGroup,
    agent: { name: 'agent', uid: agent.uid, gid: agent.gid, groups: [fsGroup] },
    app: { name: 'app', uid: APP_UID, gid: fsGroup, groups: [fsGroup] },
    stranger: { name: 'stranger', uid: STRANGER_UID, gid: STRANGER_UID, groups: [] },
  };
}

export const DEFAULT_POD = podSecurity();

const SETPRIV = '/usr/bin/setpriv';

let support: { ok: true } | { ok: false; reason: string } | undefined;

/** Whether processes can be run as pod identities here (root, and setpriv present). */
export function podSupport(): { ok: true } | { ok: false; reason: string } {
  if (support) return support;
  if (process.getuid?.() !== 0) support = { ok: false, reason: 'pod harness: not root, so processes cannot run as uid 65532 (CI runs as root)' };
  else if (!existsSync(SETPRIV)) support = { ok: false, reason: `pod harness: ${SETPRIV} is missing (apt-get install util-linux)` };
  else support = { ok: true };
  return support;
}

/** `command args` wrapped to run as `id` with no capabilities and no_new_privs. */
export function asIdentity(id: PodIdentity, command: string, args: readonly string[]): { command: string; args: string[] } {
  return {
    command: SETPRIV,
    args: [
      `--reuid=${id.uid}`,
      `--regid=${id.gid}`,
      id.groups.length ? `--groups=${id.groups.join(',')}` : '--clear-groups',
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      '--',
      command,
      ...args,
    ],
  };
}

/**
 * The first directory on the way to `path` that `id` cannot traverse (or the
 * file it cannot read), from the modes alone; undefined when reachable.
 */
export function unreachableFor(path: string, id: PodIdentity): string | undefined {
  const abs = resolve(path);
  const parts = abs.split(sep).filter(Boolean);
  const allowed = (p: string, bit: number): boolean => {
    const st = statSync(p);
    if (st.uid === id.uid) return (st.mode & (bit << 6)) !== 0;
    if (st.gid === id.gid || id.groups.includes(st.gid)) return (st.mode & (bit << 3)) !== 0;
    return (st.mode & bit) !== 0;
  };
  let dir = '/';
  for (const part of parts.slice(0, -1)) {
    dir = join(dir, part);
    if (!allowed(dir, constants.S_IXOTH)) return dir;
  }
  return allowed(abs, constants.S_IROTH) ? undefined : abs;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** What a process of the project needs: the runtime and the sources it loads. */
const PROJECT_ENTRIES = ['package.json', 'src', 'node_modules', 'dist'] as const;

export interface ProjectPaths {
  /** The project root uid 65532 can reach (the checkout, or a staged copy). */
  readonly root: string;
  readonly node: string;
  readonly cli: string;
  readonly staged: boolean;
}

let projectFor: ProjectPaths | undefined;

/**
 * `root` when `id` can reach `probe` (a path under it), else a copy of its
 * `entries` in a fresh 0755 directory under the system temp dir: hard links
 * where the file system allows (cheap), else a full copy. Throws a message
 * saying what to do when neither works.
 */
export function reachableTree(id: PodIdentity, root: string, entries: readonly string[], probe: string): { root: string; staged: boolean } {
  const blocked = unreachableFor(join(root, probe), id);
  if (blocked === undefined) return { root, staged: false };
  const stage = execFileSync('mktemp', ['-d', join(tmpdir(), 'cs-pod-stage-XXXXXX')], { encoding: 'utf8' }).trim();
  execFileSync('chmod', ['0755', stage]);
  for (const entry of entries) {
    if (!existsSync(join(root, entry))) continue;
    if (spawnSync('cp', ['-al', join(root, entry), stage]).status === 0) continue;
    const copied = spawnSync('cp', ['-a', join(root, entry), stage]);
    if (copied.status !== 0) {
      throw new Error(
        `pod harness: uid ${id.uid} cannot traverse ${blocked} to reach ${root}, and staging it in ${stage} failed (${copied.stderr.toString().trim()}). ` +
          `Put the checkout under a directory others can traverse (chmod o+x ${blocked}), or free space in ${tmpdir()}.`,
      );
    }
  }
  const still = unreachableFor(join(stage, probe), id);
  if (still !== undefined) throw new Error(`pod harness: uid ${id.uid} still cannot reach ${still} after staging ${root} into ${stage}; check the files' modes (o+r, o+x on directories)`);
  return { root: stage, staged: true };
}

/**
 * The project as `id` can reach it: the checkout itself when every directory
 * on the way is traversable (node included), else a staged copy.
 */
export function reachableProject(id: PodIdentity = DEFAULT_POD.agent, root = ROOT): ProjectPaths {
  if (projectFor && root === ROOT) return projectFor;
  const node = process.execPath;
  if (!node.startsWith(root) && unreachableFor(node, id) !== undefined) {
    throw new Error(`pod harness: uid ${id.uid} cannot run ${node} (${unreachableFor(node, id) ?? ''} is not traversable); use the project's own node (npm ci) or make its directory traversable`);
  }
  const tree = reachableTree(id, root, PROJECT_ENTRIES, 'src/cli/main.ts');
  if (!tree.staged && unreachableFor(node, id) !== undefined) {
    throw new Error(`pod harness: uid ${id.uid} cannot reach ${node}; make its directory traversable`);
  }
  const paths = { root: tree.root, node: tree.staged && node.startsWith(root) ? join(tree.root, relative(root, node)) : node, cli: join(tree.root, 'src/cli/main.ts'), staged: tree.staged };
  if (root === ROOT) projectFor = paths;
  return paths;
}

/** A directory standing for the pod's file system: traversable by every identity (mkdtemp makes 0700). */
export async function makePodDir(prefix = 'cs-pod-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}

export interface VolumeOptions {
  /** `Memory`: a tmpfs of `sizeBytes` (emptyDir medium: Memory), when the harness may mount; otherwise a plain directory. */
  readonly medium?: 'Memory';
  readonly sizeBytes?: number;
}

export interface Volume {
  readonly path: string;
  /** True when the volume is a real tmpfs. */
  readonly memoryBacked: boolean;
  /** Unmounts a tmpfs (the directory stays for the caller to remove). */
  unmount(): Promise<void>;
}

function run(command: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(command, [...args], { encoding: 'utf8', timeout: 20_000, ...(env ? { env } : {}) }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/** An emptyDir as the kubelet makes it for a pod with `fsGroup`: root:fsGroup, mode 2777 (setgid). */
export async function makeVolume(path: string, fsGroup: number, options: VolumeOptions = {}): Promise<Volume> {
  await mkdir(path, { recursive: true });
  let memoryBacked = false;
  if (options.medium === 'Memory' && podSupport().ok) {
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', `size=${options.sizeBytes ?? 16 * 1024 * 1024},mode=2777`, 'tmpfs', path]);
    memoryBacked = mounted.code === 0;
  }
  if (process.getuid?.() === 0) await chown(path, 0, fsGroup);
  await chmod(path, 0o2777);
  return {
    path,
    memoryBacked,
    async unmount() {
      if (memoryBacked) await run('umount', ['-l', path]);
      memoryBacked = false;
    },
  };
}

/** Runs `command` as `id` (no capabilities); exit code and output. */
export function runAs(id: PodIdentity, command: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  const wrapped = asIdentity(id, command, args);
  return run(wrapped.command, wrapped.args, env);
}

interface SecurityContextLike {
  readonly runAsUser?: number;
  readonly runAsGroup?: number;
  readonly fsGroup?: number;
  readonly supplementalGroups?: readonly number[];
}

/**
 * The identity a container of a pod spec runs as, as the kubelet resolves it:
 * the container's runAsUser/runAsGroup over the pod's, the image's user
 * (`imageUser`) when neither sets one, and the pod's fsGroup and
 * supplementalGroups as supplementary groups.
 */
export function identityOf(
  name: string,
  container: { securityContext?: SecurityContextLike },
  pod: { securityContext?: SecurityContextLike },
  imageUser: { uid: number; gid: number } = { uid: AGENT_UID, gid: AGENT_UID },
): PodIdentity {
  const uid = container.securityContext?.runAsUser ?? pod.securityContext?.runAsUser ?? imageUser.uid;
  const gid = container.securityContext?.runAsGroup ?? pod.securityContext?.runAsGroup ?? imageUser.gid;
  const groups = [pod.securityContext?.fsGroup, ...(pod.securityContext?.supplementalGroups ?? [])].filter((g): g is number => g !== undefined);
  return { name, uid, gid, groups };
}

/** Whether `id` can read the file at `path` (through every symlink, as an app does). */
export async function canRead(id: PodIdentity, path: string): Promise<boolean> {
  return (await runAs(id, 'cat', [path])).code === 0;
}

/** Whether `id` can connect to the Unix socket and get an HTTP answer from `/healthz`-free `GET path`. */
export async function canUseSocket(id: PodIdentity, socketPath: string, path = '/v1/items/none/none'): Promise<boolean> {
  const project = reachableProject(id);
  const script = `require('node:http').get({socketPath:${JSON.stringify(socketPath)},path:${JSON.stringify(path)}},(r)=>{r.resume();process.exit(0)}).on('error',(e)=>{console.error(e.code);process.exit(3)})`;
  return (await runAs(id, project.node, ['-e', script])).code === 0;
}

/** Entries under `dir` (the volume root itself excluded) owned by root: a pod has no root to own them. */
export async function ownedByRoot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const name of await readdir(d).catch(() => [] as string[])) {
      const p = join(d, name);
      const st = await lstat(p).catch(() => undefined);
      if (!st) continue;
      if (st.uid === 0 || st.gid === 0) out.push(`${relative(dir, p)} (${st.uid}:${st.gid})`);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}
