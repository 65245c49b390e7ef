/**
 * The credential the agent sends upstream, read from `--token-file` and
 * re-read when the file changes (a projected service-account token rotates
 * under the agent). A file that disappears keeps the last token in use and is
 * reported once, so a kubelet remount does not cut the agent off.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import type { Milliseconds } from '../shared/units.ts';

/** The file is stat()ed at most this often. */
export const TOKEN_RECHECK_INTERVAL_MS: Milliseconds = 1_000;

export interface TokenSource {
  /** The current bearer token, or undefined when none is configured. */
  current(): string | undefined;
  /** Whether the file was readable at the last check. */
  readonly healthy: boolean;
}

export function createTokenSource(path: string | undefined, clock: Clock, logger: Logger): TokenSource {
  if (!path) return { current: () => undefined, healthy: true };
  let token: string | undefined;
  let stamp = '';
  let checkedAt = -Infinity;
  let healthy = true;
  const reload = (): void => {
    checkedAt = clock.now();
    try {
      const st = statSync(path);
      const next = `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (next === stamp) return;
      token = readFileSync(path, 'utf8').trim();
      stamp = next;
      if (!healthy) logger.info({ tokenFile: path }, 'token file readable again');
      healthy = true;
    } catch (err) {
      if (healthy) logger.warn({ tokenFile: path, code: (err as NodeJS.ErrnoException).code }, 'token file unreadable; keeping the last token');
      healthy = false;
    }
  };
  reload();
  return {
    current() {
      if (clock.now() - checkedAt >= TOKEN_RECHECK_INTERVAL_MS) reload();
      return token;
    },
    get healthy() {
      return healthy;
    },
  };
}
