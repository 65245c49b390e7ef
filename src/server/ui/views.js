/**
 * The panels of the status page, each a pure builder from an API answer to
 * DOM nodes (through dom.js, so every value is text). No view shows a secret
 * value: the page calls only the fleet, list, rollout and key-age endpoints,
 * which carry none.
 */
import { el, table } from './dom.js';
import { itemConvergence } from './convergence.js';

/** Items shown at most; the rest are counted, so a large store does not freeze the tab. */
export const MAX_ROWS = 500;
/** Finished rollouts listed under the active ones. */
const MAX_FINISHED_ROLLOUTS = 10;

const HEALTH_CLASS = { ok: 'good', degraded: 'bad', starting: 'warn' };
const APP_HEALTH_CLASS = { healthy: 'good', unhealthy: 'bad' };
const STATE_CLASS = { rolling: 'warn', paused: 'warn', completed: 'good', rolled_back: 'bad', aborted: 'bad' };
const ACTIVE_STATES = new Set(['rolling', 'paused']);
/** The actions each state allows, in button order. */
const ACTIONS_BY_STATE = { rolling: ['promote', 'pause', 'abort'], paused: ['resume', 'promote', 'abort'] };

/** @param {number} seconds */
export function formatAge(seconds) {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function badge(text, kind) {
  return el('span', { className: `badge ${kind ?? ''}` }, text);
}

function truncated(total, more = false) {
  if (more) return el('p', { className: 'hint' }, `Showing the first ${Math.min(total, MAX_ROWS)}; there are more (config-sidecar list shows them all).`);
  return total > MAX_ROWS ? el('p', { className: 'hint' }, `Showing ${MAX_ROWS} of ${total}.`) : null;
}

/** @param {{ currentRevision: number, agents: any[] }} fleet */
export function fleetView(fleet) {
  const agents = fleet.agents;
  if (agents.length === 0) return [el('p', { className: 'empty' }, `No agents have reported (server revision ${fleet.currentRevision}).`)];
  const connected = agents.filter((a) => a.connected).length;
  const silent = agents.filter((a) => a.silent).length;
  const maxLag = Math.max(0, ...agents.map((a) => a.lag));
  const summary = el('p', { className: 'summary' }, `${plural(agents.length, 'agent')}, ${connected} connected, ${silent} silent, largest lag ${maxLag} revisions; server at revision ${fleet.currentRevision}.`);
  const rows = agents.slice(0, MAX_ROWS).map((a) => [
    a.id,
    a.subject,
    badge(a.health, HEALTH_CLASS[a.health]),
    appHealth(a),
    streamState(a),
    a.lag === 0 ? '0' : badge(String(a.lag), 'warn'),
    String(a.appliedRevision),
    a.lastSeen,
    a.prefixes.join(', '),
    a.rollouts.map((r) => `${r.rollout}: ${r.item} v${r.version}`).join('; '),
  ]);
  const headings = ['Agent', 'Subject', 'Health', 'Application', 'Connected', 'Lag', 'Applied revision', 'Last seen', 'Prefixes', 'Serving rollouts'];
  return [summary, table(headings, rows, (i) => ({ 'data-agent': agents[i].id })), truncated(agents.length)];
}

/** Connected, not, or silent with the server's reason: a silent agent's last report no longer counts, whatever it said. */
function streamState(agent) {
  if (agent.silent) return el('span', { className: 'silent' }, badge('silent', 'bad'), ' ', el('span', { className: 'silence' }, agent.silentReason ?? ''));
  return agent.connected ? 'yes' : badge('no', 'bad');
}

/** The application's own signal as its agent last heard it, with its reason (free text from the pod). */
function appHealth(agent) {
  if (agent.appHealth === undefined || agent.appHealth === 'unknown') return agent.healthReason ?? '';
  return el('span', {}, badge(agent.appHealth, APP_HEALTH_CLASS[agent.appHealth]), agent.healthReason ? ' ' : null, agent.healthReason ? el('span', { className: 'reason' }, agent.healthReason) : null);
}

/**
 * @param {{ items: any[], more?: boolean, listedNamespaces?: number, namespaces?: number }} list one list, or the lists of the first `listedNamespaces` of `namespaces`; `more` when a list had a next page
 * @param {{ agents: any[] } | undefined} fleet undefined when the fleet could not be read
 * @param {{ rollouts: any[] } | undefined} [rollouts] undefined when the rollouts could not be read
 */
export function itemsView(list, fleet, rollouts) {
  const items = list.items;
  // One active rollout per item (the server's rule): which one holds each item now.
  const rolling = new Map();
  for (const r of rollouts?.rollouts ?? []) if (ACTIVE_STATES.has(r.state)) for (const item of r.items) rolling.set(item, r);
  if (items.length === 0) return [el('p', { className: 'empty' }, 'No items.')];
  const rows = items.slice(0, MAX_ROWS).map((item) => {
    let converged = 'unknown';
    let behind = '';
    if (fleet) {
      const c = itemConvergence(item, fleet.agents);
      converged = c.covering === 0 ? badge('no agent', 'warn') : badge(`${c.applied}/${c.covering}`, c.applied === c.covering ? 'good' : 'warn');
      behind = c.behind.join(', ');
    }
    const r = rolling.get(`${item.namespace}/${item.name}`);
    const rollout = r ? el('span', { className: 'rollout' }, badge(r.state, STATE_CLASS[r.state]), ` ${r.id} at ${r.percent}%`) : '';
    return [`${item.namespace}/${item.name}`, item.kind, String(item.version), String(item.revision), item.envs.join(', '), converged, behind, rollout];
  });
  const headings = ['Item', 'Kind', 'Version', 'Revision', 'Environments', 'Agents converged', 'Behind', 'Rollout'];
  const partial = list.namespaces > list.listedNamespaces ? el('p', { className: 'hint' }, `Items of the first ${list.listedNamespaces} of ${list.namespaces} namespaces.`) : null;
  return [table(headings, rows, (i) => ({ 'data-item': `${items[i].namespace}/${items[i].name}` })), truncated(items.length, list.more === true), partial];
}

/**
 * @param {{ rollouts: any[] }} answer
 * @param {(id: string, action: string) => void} onAction
 */
export function rolloutsView(answer, onAction) {
  // Newest first, whatever order the server lists them in.
  const newestFirst = [...answer.rollouts].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt));
  const active = newestFirst.filter((r) => ACTIVE_STATES.has(r.state));
  const allFinished = newestFirst.filter((r) => !ACTIVE_STATES.has(r.state));
  const finished = allFinished.slice(0, MAX_FINISHED_ROLLOUTS);
  if (active.length + finished.length === 0) return [el('p', { className: 'empty' }, 'No rollouts.')];
  const nodes = [];
  if (active.length === 0) nodes.push(el('p', { className: 'empty' }, 'No rollout in progress.'));
  for (const r of [...active, ...finished]) nodes.push(rolloutCard(r, onAction));
  if (allFinished.length > finished.length) nodes.push(el('p', { className: 'hint' }, `${allFinished.length - finished.length} older finished rollouts not shown.`));
  return nodes;
}

/** A canary's health levels in order (as `rollout status` prints them). */
function canaryLevels(c) {
  if (!c.reporting) return 'not reporting';
  const levels = [c.connected ? 'connected' : c.silent ? `stream down (silent: no report since ${c.lastReport ?? '?'})` : 'stream down', c.applied ? 'applied' : 'not applied yet'];
  if (c.files !== 'none') levels.push(c.files === 'published' ? 'files published' : 'files not published yet');
  levels.push(`app ${c.appHealth === 'unknown' ? 'health unknown' : c.appHealth}`);
  return levels.join(', ');
}

function canaryList(statuses) {
  return el('ul', {}, ...statuses.map((c) => el('li', { 'data-agent': c.agent }, el('span', { className: 'agent' }, c.agent), ': ', el('span', { className: 'levels' }, canaryLevels(c)))));
}

function rolloutCard(r, onAction) {
  const steps = r.steps.map((p, i) => (i === r.step ? `[${p}%]` : `${p}%`)).join(' → ');
  const buttons = (ACTIONS_BY_STATE[r.state] ?? []).map((action) =>
    el('button', { type: 'button', className: `action ${action}`, 'data-action': action, onclick: () => onAction(r.id, action) }, action[0].toUpperCase() + action.slice(1)),
  );
  const unhealthy = r.unhealthy.length === 0 ? 'none' : el('ul', {}, ...r.unhealthy.map((u) => el('li', {}, el('span', { className: 'agent' }, u.agent), ': ', el('span', { className: 'reason' }, u.reason))));
  return el(
    'article',
    { className: `rollout ${r.state}`, 'data-rollout': r.id },
    el('h3', {}, `Rollout ${r.id} `, badge(r.state, STATE_CLASS[r.state])),
    el(
      'dl',
      {},
      el('dt', {}, 'Step'),
      el('dd', { className: 'step' }, `${r.step + 1} of ${r.steps.length}: ${r.percent}% (${steps})`),
      el('dt', {}, 'Items'),
      el('dd', {}, r.items.join(', ')),
      el('dt', {}, 'Canaries'),
      el('dd', { className: 'canary' }, r.canary.length === 0 ? 'none' : r.canaryStatus ? canaryList(r.canaryStatus) : r.canary.join(', ')),
      el('dt', {}, 'Unhealthy'),
      el('dd', { className: 'unhealthy' }, unhealthy),
      el('dt', {}, 'Bake'),
      el('dd', {}, `${r.bakeSeconds} s per step, at most ${r.maxUnhealthy} unhealthy; step started ${r.stepStartedAt}`),
      r.reason === undefined ? null : el('dt', {}, 'Reason'),
      r.reason === undefined ? null : el('dd', { className: 'reason' }, r.reason),
    ),
    buttons.length === 0 ? null : el('div', { className: 'actions' }, ...buttons),
  );
}

/** @param {{ keys: any[] }} answer */
export function keysView(answer) {
  if (answer.keys.length === 0) return [el('p', { className: 'empty' }, 'No data keys yet (nothing written).')];
  const now = Date.now();
  const rows = answer.keys.slice(0, MAX_ROWS).map((k) => {
    const due = Date.parse(k.rotationDueAt);
    return [k.namespace, String(k.version), formatAge(k.ageSeconds), k.createdAt, due <= now ? badge(`${k.rotationDueAt} (due)`, 'warn') : k.rotationDueAt];
  });
  return [table(['Namespace', 'Key version', 'Age', 'Created', 'Rotation due'], rows), truncated(answer.keys.length)];
}
