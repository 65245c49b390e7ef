/**
 * The sections and symbols of an ELF64 executable (the node binary), read
 * straight from the file, placed by file offset so a page of a mapping (which
 * /proc/PID/maps gives by file offset) finds them whether or not the binary
 * is position-independent. For bench/binary-pages.ts.
 */
import { closeSync, openSync, readSync } from 'node:fs';

export interface ElfSection {
  readonly name: string;
  /** File offset and size in bytes; NOBITS sections (.bss) have no file bytes and are left out. */
  readonly offset: number;
  readonly size: number;
}

export interface ElfSymbol {
  readonly name: string;
  /** File offset (address minus the section's address plus its offset) and size in bytes. */
  readonly offset: number;
  readonly size: number;
  readonly section: string;
}

export interface ElfImage {
  readonly sections: readonly ElfSection[];
  /**
   * Sized symbols, sorted by offset; aliases (same offset) keep the first
   * name. A run of at least `UNNAMED_RANGE_BYTES` that no symbol covers is
   * added as a symbol named by what it holds (`unnamedRangeName`).
   */
  readonly symbols: readonly ElfSymbol[];
}

const SHT_SYMTAB = 2;
/** Unnamed runs this long are named: in node 24 .rodata holds two, the built-in modules' JS sources and the start-up snapshot. */
const UNNAMED_RANGE_BYTES = 256 * 1024;
/** V8's snapshot header carries the version string, e.g. `13.6.233.17-node.53`. */
const SNAPSHOT_VERSION = /\d+\.\d+\.\d+\.\d+-node\.\d+/;
const SHT_NOBITS = 8;
const SHF_ALLOC = 2n;

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, offset + done);
    if (n === 0) throw new Error(`unexpected end of file at ${offset + done}`);
    done += n;
  }
  return buf;
}

/** Runs of `section` at least `UNNAMED_RANGE_BYTES` long that no symbol covers. */
function unnamedRanges(section: ElfSection, sorted: readonly ElfSymbol[]): Array<{ offset: number; size: number }> {
  const out: Array<{ offset: number; size: number }> = [];
  let at = section.offset;
  const end = section.offset + section.size;
  for (const s of sorted) {
    if (s.section !== section.name) continue;
    if (s.offset - at >= UNNAMED_RANGE_BYTES) out.push({ offset: at, size: s.offset - at });
    at = Math.max(at, s.offset + s.size);
  }
  if (end - at >= UNNAMED_RANGE_BYTES) out.push({ offset: at, size: end - at });
  return out;
}

/** A name for an unnamed run, from its first 64 KiB: the start-up snapshot, JS source text, or its offset. */
function unnamedRangeName(fd: number, offset: number, size: number): string {
  const head = readAt(fd, offset, Math.min(size, 64 * 1024));
  const where = `0x${offset.toString(16)}, ${(size / 2 ** 20).toFixed(1)} MiB`;
  if (SNAPSHOT_VERSION.test(head.toString('latin1', 0, 4096))) return `[start-up snapshot: V8 heap and node's, ${where}]`;
  const printable = head.reduce((n, b) => n + (b === 0 || b === 9 || b === 10 || (b >= 32 && b < 127) ? 1 : 0), 0);
  if (printable / head.length > 0.95) return `[JS sources of node's built-in modules, ${where}]`;
  return `[unnamed, ${where}]`;
}

const cString = (table: Buffer, at: number): string => table.toString('latin1', at, table.indexOf(0, at));

/** Reads `path`'s section headers and its symbol table (`.symtab`, or `.dynsym` if stripped). */
export function readElfImage(path: string): ElfImage {
  const fd = openSync(path, 'r');
  try {
    const header = readAt(fd, 0, 64);
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) throw new Error(`${path} is not a little-endian ELF64 file`);
    const shoff = Number(header.readBigUInt64LE(0x28));
    const shentsize = header.readUInt16LE(0x3a);
    const shnum = header.readUInt16LE(0x3c);
    const shstrndx = header.readUInt16LE(0x3e);
    const table = readAt(fd, shoff, shentsize * shnum);
    const raw = Array.from({ length: shnum }, (_, i) => {
      const at = i * shentsize;
      return {
        nameAt: table.readUInt32LE(at),
        type: table.readUInt32LE(at + 4),
        alloc: (table.readBigUInt64LE(at + 8) & SHF_ALLOC) !== 0n,
        addr: Number(table.readBigUInt64LE(at + 16)),
        offset: Number(table.readBigUInt64LE(at + 24)),
        size: Number(table.readBigUInt64LE(at + 32)),
        link: table.readUInt32LE(at + 40),
      };
    });
    const shstr = raw[shstrndx];
    if (!shstr) throw new Error(`${path}: no section name table`);
    const names = readAt(fd, shstr.offset, shstr.size);
    const named = raw.map((s) => ({ ...s, name: cString(names, s.nameAt) }));
    const sections = named.filter((s) => s.alloc && s.type !== SHT_NOBITS && s.size > 0).map(({ name, offset, size }) => ({ name, offset, size }));

    const symtab = named.find((s) => s.type === SHT_SYMTAB) ?? named.find((s) => s.name === '.dynsym');
    const symbols: ElfSymbol[] = [];
    if (symtab) {
      const strtab = named[symtab.link];
      if (!strtab) throw new Error(`${path}: no string table for ${symtab.name}`);
      const strings = readAt(fd, strtab.offset, strtab.size);
      const entries = readAt(fd, symtab.offset, symtab.size);
      for (let at = 0; at + 24 <= entries.length; at += 24) {
        const size = Number(entries.readBigUInt64LE(at + 16));
        const shndx = entries.readUInt16LE(at + 6);
        const section = named[shndx];
        if (size === 0 || !section || !section.alloc || section.type === SHT_NOBITS || shndx === 0 || shndx >= 0xff00) continue;
        const value = Number(entries.readBigUInt64LE(at + 8));
        symbols.push({ name: cString(strings, entries.readUInt32LE(at)), offset: section.offset + (value - section.addr), size, section: section.name });
      }
    }
    symbols.sort((a, b) => a.offset - b.offset || b.size - a.size);
    const unique = symbols.filter((s, i) => i === 0 || (symbols[i - 1] as ElfSymbol).offset !== s.offset);
    // Only where symbols are: .dynstr and the like have none, and are not unnamed data.
    const symbolled = sections.filter((section) => unique.some((s) => s.section === section.name));
    const ranges = symbolled.flatMap((section) => unnamedRanges(section, unique).map((r) => ({ ...r, name: unnamedRangeName(fd, r.offset, r.size), section: section.name })));
    return { sections, symbols: [...unique, ...ranges].sort((a, b) => a.offset - b.offset) };
  } finally {
    closeSync(fd);
  }
}
