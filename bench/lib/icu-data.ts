/**
 * The items of ICU's common data (`icudt<v>_dat`, linked into the node
 * binary): its table of contents names each item (`uprops.icu`, `nfc.nrm`,
 * `coll/root.res`, …) and where it starts, so resident pages inside the data
 * can be told apart by what they serve. For bench/binary-pages.ts.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import type { ElfSymbol } from './elf-image.ts';

/** The items of the ICU data at `data` (a symbol of the file at `path`) as symbols named `icudt…_dat: <item>`. */
export function icuDataItems(path: string, data: ElfSymbol): ElfSymbol[] {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(Math.min(data.size, 4 * 1024 * 1024));
    readSync(fd, head, 0, head.length, data.offset);
    // MappedData: headerSize, then magic 0xda 0x27; UDataInfo's data format "CmnD" at byte 12.
    if (head[2] !== 0xda || head[3] !== 0x27 || head.toString('latin1', 12, 16) !== 'CmnD') return [];
    const toc = head.readUInt16LE(0);
    const count = head.readUInt32LE(toc);
    const items: Array<{ name: string; at: number }> = [];
    for (let i = 0; i < count; i++) {
      const nameAt = toc + head.readUInt32LE(toc + 4 + i * 8);
      const at = toc + head.readUInt32LE(toc + 8 + i * 8);
      items.push({ name: head.toString('latin1', nameAt, head.indexOf(0, nameAt)).replace(/^icudt\w+?\//, ''), at });
    }
    items.sort((a, b) => a.at - b.at);
    return items.map((item, i) => {
      const end = items[i + 1]?.at ?? data.size;
      return { name: `${data.name}: ${item.name}`, offset: data.offset + item.at, size: end - item.at, section: data.section };
    });
  } finally {
    closeSync(fd);
  }
}
