/**
 * A process's CPU time in nanoseconds, and how long its threads waited for a
 * core, from the scheduler's own accounting (/proc/PID/task/TID/schedstat:
 * time on the CPU, time runnable but waiting, timeslices). /proc/PID/stat
 * gives the same CPU time in clock ticks (10 ms), which is ±1 % of a 1-s
 * run; a short run needs the nanoseconds. And the busy time of one core
 * from /proc/stat, so a run can tell how much of its core other processes
 * took.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { CLK_TCK, cpuSeconds } from './proc.ts';

export interface CpuSample {
  /** CPU time of every thread of the process, in seconds. */
  readonly cpuS: number;
  /** Time its threads were runnable but waited for a core, in seconds (NaN without schedstat). */
  readonly waitS: number;
}

let schedstatMissing = false;

/**
 * Sums every live thread's schedstat, so the figure counts what
 * /proc/PID/stat's utime + stime count (all threads) but for threads that
 * exit between two samples (node's threads live as long as the process).
 * Without schedstat (a kernel without CONFIG_SCHED_INFO) it falls back to
 * /proc/PID/stat.
 */
export function cpuSample(pid: number): CpuSample {
  if (!schedstatMissing) {
    let cpuNs = 0;
    let waitNs = 0;
    let threads = 0;
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        let text: string;
        try {
          text = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
        } catch {
          continue; // the thread exited since the listing
        }
        const [run, wait] = text.trim().split(' ');
        cpuNs += Number(run);
        waitNs += Number(wait);
        threads++;
      }
    } catch (err) {
      // No task directory: the process has exited (cpuSeconds below says so), which says nothing about the kernel.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return { cpuS: cpuSeconds(pid), waitS: Number.NaN };
    }
    if (threads > 0) return { cpuS: cpuNs / 1e9, waitS: waitNs / 1e9 };
    schedstatMissing = true;
  }
  return { cpuS: cpuSeconds(pid), waitS: Number.NaN };
}

/** Busy seconds (everything but idle and iowait) of one core since boot, from /proc/stat (clock ticks: a coarse figure). */
export function coreBusySeconds(core: number): number {
  const line = readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`cpu${core} `));
  if (line === undefined) return Number.NaN;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …
  const busy = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0);
  return busy / CLK_TCK;
}
