/**
 * Holds the current `Policy` and replaces it when the auth file changes
 * (chokidar). A file that fails to parse is logged and ignored: the last good
 * policy stays, so a typo never opens or closes the whole server. Listeners
 * (the watch service) re-check open streams after each swap.
 */
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../../shared/logger.ts';
import { envNameFor, SettingError } from '../../shared/settings.ts';
import { AuthFileError, loadAuthFile } from './auth-file.ts';
import { Policy } from './policy.ts';

export interface PolicySource {
  current(): Policy;
  onChange(listener: (policy: Policy) => void): () => void;
  close(): Promise<void>;
}

/** Coalesces editor write bursts into one reload. */
const AUTH_FILE_STABILITY_MS = 50;

/** At start a bad file stops the server, naming the flag, the file and the key path. */
async function loadAtStart(authFile: string): ReturnType<typeof loadAuthFile> {
  try {
    return await loadAuthFile(authFile);
  } catch (err) {
    if (err instanceof AuthFileError) throw new SettingError(`--auth-file (${envNameFor('--auth-file')})`, `${authFile}: ${err.message}`);
    throw err;
  }
}

export async function openPolicySource(
  authFile: string | undefined,
  logger: Logger,
  onReload: (outcome: 'ok' | 'error') => void = () => {},
): Promise<PolicySource> {
  let policy = authFile ? new Policy(await loadAtStart(authFile)) : Policy.empty();
  const listeners = new Set<(policy: Policy) => void>();
  let watcher: FSWatcher | undefined;
  if (authFile) {
    watcher = watch(authFile, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: AUTH_FILE_STABILITY_MS, pollInterval: 10 } });
    const reload = async (): Promise<void> => {
      try {
        policy = new Policy(await loadAuthFile(authFile));
        logger.info({ authFile, subjects: policy.doc.bindings.size, roles: policy.doc.roles.size }, 'auth file reloaded');
        onReload('ok');
        for (const listener of listeners) listener(policy);
      } catch (err) {
        onReload('error');
        logger.error({ authFile, err: (err as Error).message }, 'auth file reload failed; keeping the previous policy');
      }
    };
    watcher.on('change', () => void reload());
    watcher.on('add', () => void reload());
    await new Promise<void>((resolve) => watcher?.once('ready', () => resolve()));
  }
  return {
    current: () => policy,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      await watcher?.close();
    },
  };
}
