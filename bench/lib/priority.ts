/**
 * Scheduling priority for the saturation runs. The bench lock keeps other
 * benchmarks off the machine, not other engineers' tests and builds, which
 * are not pinned and land on the SUT core too: a run that shares its core
 * costs the server more CPU per request (cache and batching lost at each
 * preemption), and not the same for two runs seconds apart. Raising every
 * thread of the measured servers and of the load client above them (nice
 * -10 where allowed) gives both systems of a pair the same, nearly
 * undisturbed cores; nothing about what is counted changes. Without the
 * right (not root, no CAP_SYS_NICE) the runs go on at normal priority and
 * the report says so.
 */
import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** nice value of the measured processes during the saturation runs. */
export const RAISED_NICE = -10;

export interface Raised {
  /**
   * raised: every thread; refused: no right to (not root, no CAP_SYS_NICE);
   * runner-niced: the runner was started under `nice` (as the tests run the
   * smoke profile), so nothing is raised above the work it was asked to
   * yield to.
   */
  readonly state: 'raised' | 'refused' | 'runner-niced';
  /** Puts every thread that was raised back to its own earlier value. */
  restore(): void;
}

function threads(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return [pid];
  }
}

/**
 * Every current thread of each process to `RAISED_NICE`; threads started
 * later inherit it from the thread that starts them (node's main thread
 * starts its workers and helpers).
 */
export function raisePriority(pids: readonly number[]): Raised {
  const earlier: Array<[number, number]> = [];
  if (getPriority(process.pid) > 0) return { state: 'runner-niced', restore() {} };
  let raised = true;
  for (const pid of pids) {
    for (const tid of threads(pid)) {
      try {
        const before = getPriority(tid);
        setPriority(tid, RAISED_NICE);
        earlier.push([tid, before]);
      } catch (err) {
        // A thread that exited since the listing is no failure; a refusal (EACCES, EPERM) is.
        if ((err as { info?: { code?: string } }).info?.code !== 'ESRCH') raised = false;
      }
    }
  }
  return {
    state: raised ? 'raised' : 'refused',
    restore() {
      for (const [tid, before] of earlier) {
        try {
          setPriority(tid, before);
        } catch {
          // the thread exited since: nothing to restore
        }
      }
    },
  };
}
