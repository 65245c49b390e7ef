/**
 * Heap snapshot summaries for the footprint tools: self sizes grouped by node
 * type and constructor (strings and code each as one group).
 */
import { readFileSync } from 'node:fs';

/** Self sizes in a heap snapshot grouped by node type and constructor name, and their total. */
export function snapshotGroups(file: string): { readonly groups: Map<string, { count: number; bytes: number }>; readonly total: number; readonly objects: number } {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const types = snap.snapshot.meta.node_types[0];
  const groups = new Map<string, { count: number; bytes: number }>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt] as number] ?? '?';
    const rawName = snap.strings[snap.nodes[i + nameAt] as number] ?? '?';
    const name = type === 'string' || type === 'concatenated string' || type === 'sliced string' ? '(strings)' : type === 'code' ? '(code)' : rawName.slice(0, 60);
    const key = `${type} ${name}`;
    const size = snap.nodes[i + sizeAt] as number;
    total += size;
    const g = groups.get(key) ?? { count: 0, bytes: 0 };
    g.count += 1;
    g.bytes += size;
    groups.set(key, g);
  }
  return { groups, total, objects: snap.nodes.length / width };
}

/** Largest self sizes in a heap snapshot, grouped by node type and constructor name; `minCount` keeps groups with at least that many objects. */
export function summariseSnapshot(file: string, options: { minCount?: number; top?: number } = {}): string[] {
  const { groups, total, objects } = snapshotGroups(file);
  const top = [...groups]
    .filter(([, g]) => g.count >= (options.minCount ?? 0))
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .slice(0, options.top ?? 25);
  return [`heap snapshot: ${(total / 2 ** 20).toFixed(1)} MiB in ${objects} objects`, ...top.map(([k, g]) => `  ${(g.bytes / 2 ** 20).toFixed(2).padStart(7)} MiB ${String(g.count).padStart(7)} × ${k}`)];
}

