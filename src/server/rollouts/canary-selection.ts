/**
 * Which agents are a step's canaries: of the connected agents whose prefixes
 * cover one of the rollout's items, the ceil(p × n / 100) with the smallest
 * hash(rollout id, agent id). The hash spreads rollouts over the fleet (each
 * rollout picks its own agents) while a rollout picks the same agents on every
 * replica and, as the percentage grows, a superset of the step before.
 */
import { createHash } from 'node:crypto';
import { namespaceMatchesAny, parseItemPath } from '../../shared/paths.ts';

export interface CanaryCandidate {
  readonly id: string;
  readonly prefixes: readonly string[];
  readonly connected: boolean;
}

export function canaryHash(rolloutId: string, agentId: string): string {
  return createHash('sha256').update(rolloutId).update('\0').update(agentId).digest('hex');
}

/** Agents that serve at least one of `items` (namespace/name) and whose watch stream is up. */
export function eligibleAgents(agents: readonly CanaryCandidate[], items: readonly string[]): string[] {
  const namespaces = items.map((item) => parseItemPath(item).namespace);
  return agents.filter((a) => a.connected && namespaces.some((ns) => namespaceMatchesAny(ns, a.prefixes))).map((a) => a.id);
}

/** The step's canaries, smallest hash first; those of earlier steps stay (a canary never flips back mid-rollout). */
export function chooseCanaries(rolloutId: string, eligible: readonly string[], percent: number, previous: readonly string[] = []): string[] {
  const want = Math.ceil((percent * eligible.length) / 100);
  const ranked = [...new Set(eligible)].map((id) => ({ id, hash: canaryHash(rolloutId, id) })).sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  const chosen = new Set(previous);
  for (const { id } of ranked) {
    if (chosen.size >= Math.max(want, previous.length)) break;
    chosen.add(id);
  }
  return [...chosen];
}
