/**
 * Pure rules of key rings (issue 20): which previous versions of an item are
 * still in its ring. A version leaves being current when the next version of
 * its environment layer is written (`retiredAt`); it stays readable for the
 * item's grace from then, unless a write with `revokePrevious` raised the
 * item's floor above it. Tombstones are never ring members.
 */
import type { Milliseconds } from '../shared/units.ts';
import type { ItemRow, VersionMeta } from './store/store.ts';

export interface RingMember {
  readonly version: number;
  readonly env: string;
  /** The key version its row is sealed with. */
  readonly keyVersion: number | null;
  readonly retiredAt: Milliseconds;
  readonly expiresAt: Milliseconds;
}

/**
 * The ring members of an item at `now`, newest first; only of layer `env`
 * when given (a read serves one layer's ring), else of every layer (keys the
 * agents need, versions pruning must keep).
 */
export function ringMembers(item: Pick<ItemRow, 'ringGrace' | 'ringFloor'>, history: readonly VersionMeta[], now: Milliseconds, env?: string): RingMember[] {
  if (item.ringGrace <= 0) return [];
  const byEnv = new Map<string, VersionMeta[]>();
  for (const row of history) {
    if (env !== undefined && row.env !== env) continue;
    const rows = byEnv.get(row.env) ?? [];
    rows.push(row);
    byEnv.set(row.env, rows);
  }
  const out: RingMember[] = [];
  for (const rows of byEnv.values()) {
    rows.sort((a, b) => a.version - b.version);
    for (let i = 0; i < rows.length - 1; i += 1) {
      const row = rows[i] as VersionMeta;
      if (row.deleted || row.version < item.ringFloor) continue;
      const retiredAt = (rows[i + 1] as VersionMeta).createdAt;
      const expiresAt = retiredAt + item.ringGrace;
      if (expiresAt > now) out.push({ version: row.version, env: row.env, keyVersion: row.keyVersion, retiredAt, expiresAt });
    }
  }
  return out.sort((a, b) => b.version - a.version);
}
