/**
 * What tells this process apart from every other, past or future: its PID
 * with its start time and the boot it started in (Linux /proc). A PID alone
 * is not enough: the bin is PID 1 in every pod's container, so a value bound
 * only to the PID and copied from one agent's environment (or set by hand)
 * would pass for the bin's own in the next. `execve` keeps all three, so an
 * image and the one it re-executes see the same identity.
 */
import { readFileSync } from 'node:fs';

export interface ProcessIdentity {
  readonly pid: number;
  /** `<boot id>/<start time in clock ticks since boot>` (the boot id empty where it cannot be read). */
  readonly start: string;
}

/** This process's identity, or undefined where /proc does not tell its start time (not Linux). */
export function processIdentity(pid = process.pid, proc = '/proc'): ProcessIdentity | undefined {
  try {
    const stat = readFileSync(`${proc}/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses): state is field 3, starttime field 22.
    const startTicks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    if (startTicks === undefined || !/^[0-9]+$/.test(startTicks)) return undefined;
    return { pid, start: `${bootId(proc)}/${startTicks}` };
  } catch {
    return undefined;
  }
}

/** The boot id, or '' where /proc/sys hides it: the start time alone still tells this process from the next with its PID. */
function bootId(proc: string): string {
  try {
    return readFileSync(`${proc}/sys/kernel/random/boot_id`, 'utf8').trim();
  } catch {
    return '';
  }
}
