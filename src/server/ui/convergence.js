/**
 * Which agents hold an item's newest revision: an agent covers an item when
 * one of its prefixes covers the item's namespace (the rule of
 * src/shared/paths.ts namespaceMatchesPrefix), and has converged when its
 * applied revision reached the item's.
 */

/** @param {string} namespace @param {string} prefix */
export function namespaceMatchesPrefix(namespace, prefix) {
  const p = prefix.replace(/\/+$/, '');
  return namespace === p || namespace.startsWith(`${p}/`);
}

/**
 * @param {{ namespace: string, revision: number }} item
 * @param {ReadonlyArray<{ id: string, prefixes: readonly string[], appliedRevision: number }>} agents
 * @returns {{ covering: number, applied: number, behind: string[] }}
 */
export function itemConvergence(item, agents) {
  const covering = agents.filter((a) => a.prefixes.some((p) => namespaceMatchesPrefix(item.namespace, p)));
  const behind = covering.filter((a) => a.appliedRevision < item.revision).map((a) => a.id);
  return { covering: covering.length, applied: covering.length - behind.length, behind };
}
