/**
 * Which pages of a process's executable are resident in it, from
 * /proc/PID/maps and /proc/PID/pagemap (8 bytes per virtual page: bit 63
 * present, bit 61 a file page; a written private page, the binary's .data
 * after copy-on-write, is anonymous). Reading pagemap's flags needs no
 * privilege; only the frame numbers, not used here, need root. Pages are
 * given by file offset, so they can be matched with the ELF's sections and
 * symbols (lib/elf-image.ts). For bench/binary-pages.ts.
 */
import { closeSync, openSync, readFileSync, readlinkSync, readSync } from 'node:fs';

export const PAGE_BYTES = 4096;

export interface ResidentPages {
  /** The executable's path, from /proc/PID/exe. */
  readonly exe: string;
  /** File offsets of resident pages still backed by the file (counted in RssFile). */
  readonly file: readonly number[];
  /** File offsets of resident pages that became anonymous (copy-on-write; counted in RssAnon). */
  readonly anon: readonly number[];
}

const PRESENT = 1n << 63n;
const FILE_PAGE = 1n << 61n;

/** The resident pages of the executable `pid` runs, by file offset. */
export function residentPagesOfExe(pid: number): ResidentPages {
  const exe = readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '');
  const file: number[] = [];
  const anon: number[] = [];
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      // start-end perms offset dev inode path
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
      if (!m || m[4] !== exe) continue;
      const start = Number.parseInt(m[1] as string, 16);
      const end = Number.parseInt(m[2] as string, 16);
      const offset = Number.parseInt(m[3] as string, 16);
      const pages = (end - start) / PAGE_BYTES;
      const buf = Buffer.alloc(pages * 8);
      readSync(fd, buf, 0, buf.length, (start / PAGE_BYTES) * 8);
      for (let i = 0; i < pages; i++) {
        const entry = buf.readBigUInt64LE(i * 8);
        if ((entry & PRESENT) === 0n) continue;
        ((entry & FILE_PAGE) !== 0n ? file : anon).push(offset + i * PAGE_BYTES);
      }
    }
  } finally {
    closeSync(fd);
  }
  return { exe, file, anon };
}
