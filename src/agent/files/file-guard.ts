/**
 * Watches the rendered files with chokidar (DESIGN.md §6). Any add, change or
 * unlink under `--files-dir` (user-visible links, `..data`, the snapshot
 * itself) asks the renderer to verify; the renderer compares each file with
 * the bytes it published and restores the ones that differ. Deciding by
 * content rather than by who wrote keeps our own publications (which also
 * fire events) from ever being "restored", with no timing window to get wrong.
 *
 * chokidar is imported lazily: an agent without `files:` never loads it.
 */
import type { FSWatcher } from 'chokidar';
import type { Logger } from '../../shared/logger.ts';

/**
 * chokidar drops a second change event for one path within 5 ms of the first,
 * so a foreign edit right after our own publication could go unseen; one more
 * verification this long after the last event catches it.
 */
export const TRAILING_VERIFY_MS = 100;

export class FileGuard {
  readonly ready: Promise<void>;
  #watcher: FSWatcher | undefined;
  #closed = false;
  #trailing: NodeJS.Timeout | undefined;

  constructor(dir: string, onActivity: () => void, logger: Logger) {
    this.ready = (async () => {
      const { watch } = await import('chokidar');
      if (this.#closed) return;
      // followSymlinks off: the links are ours and everything they point at is inside `dir` anyway.
      // atomic off: a delete must be seen as a delete, not folded into a later re-add.
      const watcher = watch(dir, { ignoreInitial: true, followSymlinks: false, atomic: false, persistent: false });
      this.#watcher = watcher;
      watcher.on('all', () => {
        onActivity();
        clearTimeout(this.#trailing);
        this.#trailing = setTimeout(() => {
          if (!this.#closed) onActivity();
        }, TRAILING_VERIFY_MS).unref();
      });
      watcher.on('error', (err: unknown) => {
        // Snapshot directories vanish under the watcher by design; nothing to act on.
        logger.debug({ err: err instanceof Error ? err.message : String(err) }, 'file watcher error');
      });
      await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
    })();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#trailing);
    await this.ready.catch(() => undefined);
    await this.#watcher?.close();
  }
}
