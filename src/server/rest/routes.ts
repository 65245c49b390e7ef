/**
 * URL → route, one top-level resource per operation so no namespace segment
 * can be read as a verb. Paths are decoded once (encoded slashes and dot
 * segments refused) and validated with shared/paths before anything else.
 */
import { AppError } from '../../shared/errors.ts';
import { decodePathRemainder, parseItemPath, validateNamespace, validatePrefix, type ItemRef } from '../../shared/paths.ts';
import { ROLLOUT_ACTIONS, ROLLOUT_ID_RE, type RolloutAction } from '../../shared/protocol.ts';
import { wantsRing } from '../../shared/ring-proto.ts';
import type { Action } from '../auth/policy.ts';
import { parseListPage, type ListPage } from './list-page.ts';

export type Route =
  | { readonly op: 'openapi' }
  /** The status page: `asset` is the path after /ui/, undefined for /ui itself. */
  | { readonly op: 'statusPage'; readonly asset: string | undefined }
  | { readonly op: 'changes' }
  | { readonly op: 'agents' }
  | { readonly op: 'rollouts' }
  | { readonly op: 'rolloutStart' }
  | { readonly op: 'rollout'; readonly id: string }
  | { readonly op: 'rolloutAction'; readonly id: string; readonly action: RolloutAction }
  | { readonly op: 'getItem'; readonly ref: ItemRef; readonly env: string | undefined; readonly ring?: boolean; readonly rollout?: string }
  | { readonly op: 'keys' }
  | { readonly op: 'putItem'; readonly ref: ItemRef; readonly env: string | undefined }
  | { readonly op: 'deleteItem'; readonly ref: ItemRef; readonly env: string | undefined }
  | { readonly op: 'list'; readonly prefix: string; readonly page: ListPage }
  | { readonly op: 'history'; readonly ref: ItemRef }
  | { readonly op: 'rollback'; readonly ref: ItemRef }
  | { readonly op: 'rotate'; readonly namespace: string; readonly retirePrevious?: boolean }
  | { readonly op: 'envelope'; readonly ref: ItemRef; readonly env: string | undefined; readonly ring?: boolean; readonly rollout?: string }
  | { readonly op: 'deks'; readonly namespace: string };

export type RouteOp = Route['op'];

/** Operations whose RBAC check (if any) is not one action on one namespace from the URL. */
export type CollectionOp = 'openapi' | 'statusPage' | 'changes' | 'agents' | 'keys' | 'rollouts' | 'rolloutStart' | 'rollout' | 'rolloutAction';

/**
 * The RBAC action each operation needs, on the namespace it touches. A change
 * set is checked per member (write or delete) and the fleet view per agent
 * (`agents:read`) and the key ages per namespace (`list`), in the handler.
 */
export const ROUTE_ACTION: Readonly<Record<Exclude<RouteOp, CollectionOp>, Action>> = {
  getItem: 'read',
  putItem: 'write',
  deleteItem: 'delete',
  list: 'list',
  history: 'read',
  rollback: 'write',
  rotate: 'rotate',
  envelope: 'read',
  deks: 'read',
};

/** Route template for metric labels (bounded cardinality). */
export const ROUTE_TEMPLATE: Readonly<Record<RouteOp, string>> = {
  openapi: '/v1/openapi.json',
  statusPage: '/ui/',
  changes: '/v1/changes',
  agents: '/v1/agents',
  rollouts: '/v1/rollouts',
  rolloutStart: '/v1/rollouts',
  rollout: '/v1/rollouts/{id}',
  rolloutAction: '/v1/rollouts/{id}/{action}',
  keys: '/v1/keys',
  getItem: '/v1/items/{path}',
  putItem: '/v1/items/{path}',
  deleteItem: '/v1/items/{path}',
  list: '/v1/list/{prefix}',
  history: '/v1/history/{path}',
  rollback: '/v1/rollback/{path}',
  rotate: '/v1/rotate/{namespace}',
  envelope: '/v1/envelopes/{path}',
  deks: '/v1/deks/{namespace}',
};

export const OPENAPI_PATH = '/v1/openapi.json';

/** Collections addressed by an exact path, and the one method each accepts. */
const EXACT_ROUTES: Readonly<Record<string, { readonly method: string; readonly op: 'openapi' | 'changes' | 'agents' | 'keys' }>> = {
  [OPENAPI_PATH]: { method: 'GET', op: 'openapi' },
  '/v1/changes': { method: 'POST', op: 'changes' },
  '/v1/agents': { method: 'GET', op: 'agents' },
  '/v1/keys': { method: 'GET', op: 'keys' },
};

const METHODS: Readonly<Record<string, Readonly<Record<string, Exclude<RouteOp, CollectionOp>>>>> = {
  items: { GET: 'getItem', PUT: 'putItem', DELETE: 'deleteItem' },
  list: { GET: 'list' },
  history: { GET: 'history' },
  rollback: { POST: 'rollback' },
  rotate: { POST: 'rotate' },
  envelopes: { GET: 'envelope' },
  deks: { POST: 'deks' },
};

/** Splits a request target into path and query without resolving dot segments. */
export function splitTarget(target: string): { path: string; query: URLSearchParams } {
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: new URLSearchParams() } : { path: target.slice(0, q), query: new URLSearchParams(target.slice(q + 1)) };
}

/** /v1/rollouts, /v1/rollouts/{id} and /v1/rollouts/{id}/{action}; undefined for any other path. */
function rolloutRoute(method: string, path: string): Route | undefined {
  if (path !== '/v1/rollouts' && !path.startsWith('/v1/rollouts/')) return undefined;
  const parts = path.split('/').slice(3);
  if (parts.length === 0) {
    if (method === 'GET') return { op: 'rollouts' };
    if (method === 'POST') return { op: 'rolloutStart' };
    throw new AppError('method_not_allowed', 'Use GET (list) or POST (start) for /v1/rollouts.');
  }
  const [id = '', action, ...extra] = parts;
  if (!ROLLOUT_ID_RE.test(id) || extra.length > 0) throw new AppError('not_found', `No route ${path.slice(0, 100)}; a rollout is /v1/rollouts/{id} with the id POST /v1/rollouts answered.`);
  if (action === undefined) {
    if (method !== 'GET') throw new AppError('method_not_allowed', `Use GET for /v1/rollouts/${id}.`);
    return { op: 'rollout', id };
  }
  if (!ROLLOUT_ACTIONS.includes(action as RolloutAction)) throw new AppError('not_found', `No rollout action ${action.slice(0, 40)}; use ${ROLLOUT_ACTIONS.join(', ')}.`);
  if (method !== 'POST') throw new AppError('method_not_allowed', `Use POST for /v1/rollouts/${id}/${action}.`);
  return { op: 'rolloutAction', id, action: action as RolloutAction };
}

/** `?retire-previous=true` on a rotation (issue 20); anything else but false is refused rather than ignored. */
function retirePrevious(query: URLSearchParams): boolean {
  const value = query.get('retire-previous');
  if (value === null || value === 'false' || value === '0') return false;
  if (value === 'true' || value === '1') return true;
  throw new AppError('invalid_argument', `retire-previous must be true or false, not ${JSON.stringify(value.slice(0, 20))}.`);
}

export function parseRoute(method: string, target: string): Route {
  const { path, query } = splitTarget(target);
  const rollout = rolloutRoute(method, path);
  if (rollout) return rollout;
  if (path === '/ui' || path.startsWith('/ui/')) return { op: 'statusPage', asset: path === '/ui' ? undefined : path.slice('/ui/'.length) };
  const exact = Object.hasOwn(EXACT_ROUTES, path) ? EXACT_ROUTES[path] : undefined;
  if (exact) {
    if (method !== exact.method) throw new AppError('method_not_allowed', `Use ${exact.method} for ${path}.`);
    return { op: exact.op };
  }
  const match = /^\/v1\/([a-z]+)\/(.*)$/.exec(path);
  const resource = match?.[1] ?? '';
  const methods = METHODS[resource];
  if (!match || !methods) {
    throw new AppError('not_found', `No route ${path.slice(0, 100)}; see /v1/openapi.json.`);
  }
  const op = methods[method];
  if (!op) throw new AppError('method_not_allowed', `${method} is not allowed on /v1/${resource}/; use ${Object.keys(methods).join(' or ')}.`);
  const rest = decodePathRemainder(match[2] as string);
  const envParam = query.get('env');
  const env = envParam === null || envParam === '' ? undefined : envParam;
  switch (op) {
    case 'list': {
      const prefix = rest === '' ? '' : validatePrefix(rest);
      return { op, prefix, page: parseListPage(query, prefix) };
    }
    case 'rotate':
      return { op, namespace: validateNamespace(rest.replace(/\/+$/, '')), ...(retirePrevious(query) ? { retirePrevious: true } : {}) };
    case 'deks':
      return { op, namespace: validateNamespace(rest.replace(/\/+$/, '')) };
    case 'history':
    case 'rollback':
      return { op, ref: parseItemPath(rest) };
    case 'getItem':
    case 'envelope': {
      const ring = wantsRing(query) ? { ring: true } : {};
      const rolloutParam = query.get('rollout');
      if (rolloutParam === null || rolloutParam === '') return { op, ref: parseItemPath(rest), env, ...ring };
      if (op === 'getItem' && ring.ring) throw new AppError('invalid_argument', 'ring=1 reads the stable key ring; a rollout candidate (?rollout=) has none. Give one of the two.');
      if (!ROLLOUT_ID_RE.test(rolloutParam)) throw new AppError('invalid_argument', 'rollout must be a rollout id as POST /v1/rollouts answered it.');
      return { op, ref: parseItemPath(rest), env, ...ring, rollout: rolloutParam };
    }
    default:
      if (query.get('rollout')) throw new AppError('invalid_argument', '?rollout= applies to reads (GET /v1/items, /v1/envelopes) only.');
      return { op, ref: parseItemPath(rest), env };
  }
}
