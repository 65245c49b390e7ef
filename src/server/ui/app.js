/**
 * The status page's wiring: ask for a token once, then poll the API and
 * redraw each panel; a panel whose call fails shows the server's message
 * while the others keep updating. Polling rather than a stream: four small
 * GETs every POLL_MS cost less than holding a connection per open tab, and a
 * server restart needs no reconnect logic.
 */
import { api, ApiError, token } from './api.js';
import { el, fill } from './dom.js';
import { fleetView, itemsView, keysView, MAX_ROWS, rolloutsView } from './views.js';

const POLL_MS = 2000;
/** Namespaces listed one by one at most, when the token may not list everything. */
const MAX_NAMESPACE_LISTS = 20;
/** Asked before they run: both change what every agent serves at once. */
const CONFIRMED_ACTIONS = new Set(['promote', 'abort']);

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
let timer = undefined;
let generation = 0;
let missedWhileHidden = false;

function notice(message, kind = 'error') {
  const node = $('notice');
  node.textContent = message;
  node.className = kind;
  node.hidden = message === '';
}

function showLogin(message) {
  clearTimeout(timer);
  generation += 1;
  $('panels').hidden = true;
  $('forget-token').hidden = true;
  $('login').hidden = false;
  $('updated').textContent = '';
  notice(message ?? '');
  $('token').focus();
}

function failed(reason) {
  return el('p', { className: 'error' }, reason instanceof ApiError ? `${reason.message} (${reason.code})` : String(reason));
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  const keysCall = api('GET', '/v1/keys');
  const [fleet, items, rollouts, keys] = await Promise.allSettled([api('GET', '/v1/agents'), listItems(keysCall), api('GET', '/v1/rollouts'), keysCall]);
  // A newer refresh (an action, a new token) started meanwhile: its answer wins.
  if (mine !== generation) return;
  const refused = [fleet, items, rollouts, keys].find((r) => r.status === 'rejected' && r.reason instanceof ApiError && r.reason.status === 401);
  if (refused) {
    token.clear();
    showLogin(`The server refused the token: ${refused.reason.message}`);
    return;
  }
  $('login').hidden = true;
  $('panels').hidden = false;
  $('forget-token').hidden = false;
  const fleetValue = fleet.status === 'fulfilled' ? fleet.value : undefined;
  draw('rollouts-panel', rollouts, (value) => rolloutsView(value, act));
  draw('fleet-panel', fleet, fleetView);
  draw('items-panel', items, (value) => itemsView(value, fleetValue, rollouts.status === 'fulfilled' ? rollouts.value : undefined));
  draw('keys-panel', keys, keysView);
  $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
  schedule();
}

/**
 * The items the token may list, the first page of each call (the items
 * panel shows MAX_ROWS at most): one call when it may list everything; else,
 * as an operator's role usually grants `list` on some namespaces only, one
 * call per namespace GET /v1/keys shows it (the same `list` check), at most
 * MAX_NAMESPACE_LISTS of them.
 */
async function listItems(keysCall) {
  try {
    const all = await api('GET', `/v1/list/?limit=${MAX_ROWS}`);
    return { items: all.items, more: all.nextCursor !== undefined };
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 403) throw err;
    const namespaces = (await keysCall).keys.map((k) => k.namespace);
    const lists = await Promise.all(namespaces.slice(0, MAX_NAMESPACE_LISTS).map((ns) => api('GET', `/v1/list/${ns.split('/').map(encodeURIComponent).join('/')}?limit=${MAX_ROWS}`)));
    const items = new Map();
    // A namespace's list includes the namespaces under it: keep each item once.
    for (const item of lists.flatMap((l) => l.items)) items.set(`${item.namespace}/${item.name}`, item);
    return { more: lists.some((l) => l.nextCursor !== undefined), items: [...items.values()].sort((a, b) => (a.namespace === b.namespace ? a.name.localeCompare(b.name) : a.namespace.localeCompare(b.namespace))), listedNamespaces: Math.min(namespaces.length, MAX_NAMESPACE_LISTS), namespaces: namespaces.length };
  }
}

/** One panel from one settled call; an answer the view cannot draw (a newer server?) says so in that panel only. */
function draw(panelId, settled, view) {
  let content;
  try {
    content = settled.status === 'fulfilled' ? view(settled.value) : [failed(settled.reason)];
  } catch (err) {
    content = [failed(`This page could not show the answer: ${err instanceof Error ? err.message : String(err)}`)];
  }
  fill($(panelId), ...content);
}

/** The next poll; a hidden tab skips polls and catches up when it is shown again. */
function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => {
    if (document.hidden) missedWhileHidden = true;
    else void refresh();
  }, POLL_MS);
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden || !missedWhileHidden || !token.get()) return;
  missedWhileHidden = false;
  void refresh();
});

async function act(id, action) {
  if (CONFIRMED_ACTIONS.has(action) && !window.confirm(`${action[0].toUpperCase()}${action.slice(1)} rollout ${id}?`)) return;
  try {
    await api('POST', `/v1/rollouts/${encodeURIComponent(id)}/${action}`);
    notice(`Rollout ${id}: ${action} done.`, 'ok');
  } catch (err) {
    notice(`Rollout ${id}: ${action} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  await refresh();
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('token'));
  const value = input.value.trim();
  input.value = '';
  if (value === '') return;
  token.set(value);
  notice('');
  void refresh();
});

$('forget-token').addEventListener('click', () => {
  token.clear();
  showLogin('The token was removed from this tab.');
});

if (token.get()) void refresh();
else showLogin();
