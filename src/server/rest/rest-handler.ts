/**
 * The REST request handler: a chain of checks (route → token → rate limit →
 * role → body) and then one operation on the control plane. It returns a
 * `RestResult` instead of writing a response, so the listener stays thin and
 * every error becomes a response in one place (`sendError`).
 */
import type { IncomingMessage } from 'node:http';
import { isUtf8 } from 'node:buffer';
import { AppError, toAppError } from '../../shared/errors.ts';
import { readJson } from '../../shared/http-io.ts';
import { itemKey, parseItemPath, type ItemRef } from '../../shared/paths.ts';
import {
  CHANGE_SET_MAX_CHANGES,
  changeSetBody,
  deksRequest,
  ITEM_KINDS,
  putItemBody,
  rollbackBody,
  type ChangeEntry,
  type DeksResponse,
  type HistoryResponse,
  type ItemKind,
  type KeysResponse,
} from '../../shared/protocol.ts';
import { dekWrapper, generateEphemeralKeyPair, parseTransportPublicKey, zeroize } from '../../shared/crypto.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Bytes } from '../../shared/units.ts';
import type { z } from 'zod';
import type { AuditAction, ChangeOp, ControlPlane } from '../control-plane.ts';
import type { Authenticator, Principal } from '../auth/authenticator.ts';
import type { Policy } from '../auth/policy.ts';
import type { RateLimiter } from '../rate-limiter.ts';
import type { AgentRegistry } from '../fleet/agent-registry.ts';
import { UNAUTHENTICATED_SUBJECT, type RefusalAudit } from '../refusal-audit.ts';
import type { RolloutService } from '../rollouts/rollout-service.ts';
import { actOnRollout, candidateEnvelope, candidateItem, envelopeRollout, getRollout, listRollouts, startRollout } from './rollout-handler.ts';
import { statusPageResult, type StatusPage } from './status-page.ts';
import { parseRoute, ROUTE_ACTION, type CollectionOp, type Route } from './routes.ts';
import { encodeListCursor } from './list-page.ts';
import { ringWriteOf, type RingWrite } from '../../shared/ring-proto.ts';
import { ringJson } from '../../shared/ring-json.ts';

export interface RestDeps {
  readonly controlPlane: ControlPlane;
  readonly authenticator: Authenticator;
  readonly policy: () => Policy;
  readonly rateLimiter: RateLimiter;
  /** Where 401/403 refusals are audited (aggregated). */
  readonly refusals: RefusalAudit;
  readonly maxBody: Bytes;
  readonly openapi: Buffer;
  /** The status page's files (GET /ui/); absent in unit tests that do not need it. */
  readonly statusPage?: StatusPage;
  readonly logger: Logger;
  /** The fleet view (GET /v1/agents); absent in unit tests that do not need it. */
  readonly agents?: AgentRegistry;
  /** Staged rollouts (/v1/rollouts, candidate reads); absent in unit tests that do not need them. */
  readonly rollouts?: RolloutService;
  /** Called after a successful API rotation (metrics). */
  readonly onRotated?: (trigger: 'api') => void;
}

export interface RestResult {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  /** A JSON-serialisable body, or pre-serialised JSON bytes (zero-filled after sending when `sensitive`). */
  readonly body?: unknown;
  readonly raw?: Buffer;
  readonly sensitive?: boolean;
}

/** What the listener needs to label metrics and logs, filled in as the chain runs. */
export interface RequestContext {
  route?: Route;
  subject?: string;
}


export function parseBody<S extends z.ZodType>(schema: S, raw: unknown): z.infer<S> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  // A union's first issue is opaque; name the usual mistake (the kind) directly.
  const kind = typeof raw === 'object' && raw !== null && 'kind' in raw ? (raw as { kind: unknown }).kind : undefined;
  if (kind !== undefined && !ITEM_KINDS.includes(kind as ItemKind)) {
    throw new AppError('invalid_argument', `kind must be "config" or "secret", not ${JSON.stringify(kind).slice(0, 40)}.`);
  }
  const issue = result.error.issues[0];
  const at = issue?.path.length ? `${issue.path.join('.')}: ` : '';
  throw new AppError('invalid_argument', `The request body is invalid: ${at}${issue?.message ?? 'unexpected shape'}.`);
}

function targetOf(route: Route): string {
  switch (route.op) {
    case 'openapi':
    case 'statusPage':
    case 'changes':
    case 'agents':
    case 'rollouts':
    case 'rolloutStart':
    case 'keys':
      return '';
    case 'rollout':
    case 'rolloutAction':
      return route.id;
    case 'list':
      return route.prefix;
    case 'rotate':
    case 'deks':
      return route.namespace;
    default:
      return itemKey(route.ref);
  }
}

type ItemRoute = Exclude<Route, { op: CollectionOp }>;

function namespaceOf(route: ItemRoute): string {
  switch (route.op) {
    case 'list':
      return route.prefix;
    case 'rotate':
    case 'deks':
      return route.namespace;
    default:
      return route.ref.namespace;
  }
}

export async function handleRest(req: IncomingMessage, deps: RestDeps, ctx: RequestContext = {}): Promise<RestResult> {
  const method = req.method ?? 'GET';
  const route = parseRoute(method, req.url ?? '/');
  ctx.route = route;
  if (route.op === 'openapi') {
    return { status: 200, raw: deps.openapi };
  }
  if (route.op === 'statusPage') {
    if (!deps.statusPage) throw new AppError('not_found', 'This server does not serve the status page.');
    return statusPageResult(deps.statusPage, method, route.asset, req.headers['if-none-match']);
  }
  let principal: Principal;
  try {
    principal = await deps.authenticator.authenticate(req.headers.authorization);
  } catch (err) {
    // Failed logins are rate limited per peer address before they cost an audit write,
    // so an unauthenticated flood cannot grow the audit log at line rate.
    deps.rateLimiter.take(`${UNAUTHENTICATED_SUBJECT}@${req.socket?.remoteAddress ?? 'unknown'}`);
    await deps.refusals.record({ subject: UNAUTHENTICATED_SUBJECT, action: 'denied', target: targetOf(route), outcome: 'denied', detail: toAppError(err).code });
    throw err;
  }
  ctx.subject = principal.subject;
  // Per pod (or static token), not per subject: a Deployment's replicas share a service account.
  deps.rateLimiter.take(principal.podKey);
  if (route.op === 'changes') return writeChangeSet(req, deps, principal);
  if (route.op === 'agents') return listAgents(deps, principal);
  if (route.op === 'rollouts') return listRollouts(deps, principal);
  if (route.op === 'rolloutStart') return startRollout(req, deps, principal);
  if (route.op === 'rollout') return getRollout(route.id, deps, principal);
  if (route.op === 'rolloutAction') return actOnRollout(route.id, route.action, deps, principal);
  if (route.op === 'keys') return listKeyAges(deps, principal);
  const action = ROUTE_ACTION[route.op];
  if (!deps.policy().allows(principal.identity, action, namespaceOf(route))) {
    await deps.refusals.record({ subject: principal.subject, action: 'denied', target: targetOf(route), outcome: 'denied', detail: `${action} ${route.op}` });
    throw new AppError('permission_denied', `${principal.subject} may not ${action} ${namespaceOf(route) || 'every namespace'}.`);
  }
  if (route.op === 'getItem' && route.rollout !== undefined) return candidateItem(req, route.ref, route.env, route.rollout, deps, principal.subject);
  // A ring read (issue 20) is the stable key ring; a canary's candidate is a plain envelope.
  if (route.op === 'envelope' && (route.ring !== true || route.rollout !== undefined)) {
    const rollout = await envelopeRollout(req, route.ref, route.rollout, deps, principal);
    if (rollout !== undefined) {
      try {
        return await candidateEnvelope(route.ref, route.env, rollout, deps, principal.subject);
      } catch (err) {
        // A canary's rollout ended since it was looked up: the stable version is the answer (the ending's events follow).
        if (route.rollout !== undefined || toAppError(err).code !== 'conflict') throw err;
      }
    }
  }
  return execute(route, req, deps, principal.subject);
}

/**
 * The environments more specific than `env` whose newest version of the item is
 * not a tombstone: what still overrides a write to `env` for readers there, so
 * `put` can say so instead of leaving a write that no reader sees.
 */
export function liveLayersAfter(history: HistoryResponse, chain: readonly string[], env: string): string[] {
  const newest = new Map<string, { version: number; deleted: boolean }>();
  for (const v of history.versions) {
    const seen = newest.get(v.env);
    if (!seen || v.version > seen.version) newest.set(v.env, { version: v.version, deleted: v.deleted });
  }
  return chain.slice(chain.indexOf(env) + 1).filter((e) => newest.get(e)?.deleted === false);
}

export function checkEnv(deps: RestDeps, env: string | undefined): string {
  const envs = deps.controlPlane.environments;
  if (env === undefined) return envs[0] as string;
  if (!envs.includes(env)) throw new AppError('invalid_argument', `Unknown environment "${env.slice(0, 64)}"; use one of ${envs.join(', ')}.`);
  return env;
}

async function execute(route: ItemRoute, req: IncomingMessage, deps: RestDeps, subject: string): Promise<RestResult> {
  const cp = deps.controlPlane;
  switch (route.op) {
    case 'getItem': {
      const env = checkEnv(deps, route.env);
      if (route.ring) return getRing(route.ref, env, req, deps, subject);
      const item = await cp.getItem(route.ref, env);
      try {
        if (item.kind === 'secret') await auditRead(deps, subject, 'read', itemKey(route.ref), `env=${env}`);
        const headers = { etag: item.etag, 'x-config-revision': String(item.revision) };
        if (req.headers['if-none-match'] === item.etag) return { status: 304, headers };
        return { status: 200, headers, raw: itemJson(route.ref, item.kind, env, item), sensitive: true };
      } finally {
        zeroize(item.value);
      }
    }
    case 'putItem': {
      const env = checkEnv(deps, route.env);
      const body = parseBody(putItemBody, await readJson(req, deps.maxBody));
      const ring = ringWriteOf(body);
      const value = valueBytes(body);
      try {
        const result = await cp.putItem(route.ref, env, body.kind, value, subject, ring);
        await audit(deps, subject, 'write', itemKey(route.ref), 'ok', `env=${env} kind=${body.kind} version=${result.version}${ringDetail(ring)}`);
        return { status: 200, body: { ...result, overriddenBy: liveLayersAfter(await cp.history(route.ref), cp.environments, env) } };
      } finally {
        zeroize(value);
      }
    }
    case 'deleteItem': {
      const env = route.env === undefined ? undefined : checkEnv(deps, route.env);
      const result = await cp.deleteItem(route.ref, env, subject);
      await audit(deps, subject, 'delete', itemKey(route.ref), 'ok', env ? `env=${env}` : 'all environments');
      return { status: 200, body: result };
    }
    case 'list': {
      const { items, next } = await cp.list(route.prefix, route.page);
      return { status: 200, body: { items, ...(next ? { nextCursor: encodeListCursor(route.prefix, next) } : {}) } };
    }
    case 'history':
      return { status: 200, body: await cp.history(route.ref) };
    case 'rollback': {
      const body = parseBody(rollbackBody, await readJson(req, deps.maxBody));
      const result = await cp.rollback(route.ref, body.version, subject);
      await audit(deps, subject, 'rollback', itemKey(route.ref), 'ok', `to=${body.version} version=${result.version}`);
      return { status: 200, body: result };
    }
    case 'rotate': {
      const result = await cp.rotateNamespace(route.namespace, subject, route.retirePrevious ? { retirePrevious: true } : {});
      deps.onRotated?.('api');
      const retired = result.retiredVersions ? ` retired=${result.retiredVersions.join(',') || 'none'} resealed=${result.resealed ?? 0}` : '';
      await audit(deps, subject, 'rotate', route.namespace, 'ok', `keyVersion=${result.keyVersion}${retired}`);
      return { status: 200, body: result };
    }
    case 'envelope': {
      const env = checkEnv(deps, route.env);
      const envelope = route.ring ? await cp.getRingEnvelope(route.ref, env) : await cp.getEnvelope(route.ref, env);
      await auditRead(deps, subject, 'envelope', itemKey(route.ref), `env=${env}`);
      return { status: 200, headers: { etag: envelope.etag, 'x-config-revision': String(envelope.revision) }, body: envelope };
    }
    case 'deks': {
      const body = parseBody(deksRequest, await readJson(req, deps.maxBody));
      const recipient = parseTransportPublicKey(body.publicKey);
      const set = await cp.getDeks(route.namespace);
      // One fresh ephemeral key per response: a captured response is useless to anyone but the caller.
      const ephemeral = generateEphemeralKeyPair();
      const wrapper = dekWrapper(recipient, ephemeral);
      try {
        const response: DeksResponse = {
          namespace: set.namespace,
          keyId: set.keyId,
          currentVersion: set.currentVersion,
          serverPublicKey: ephemeral.publicKeyBase64,
          keys: set.keys.map((k) => ({ version: k.version, ...wrapper.wrap(k.dek, { namespace: set.namespace, keyVersion: k.version }) })),
        };
        await auditRead(deps, subject, 'deks', route.namespace, `versions=${set.keys.map((k) => k.version).join(',')}`);
        return { status: 200, body: response };
      } finally {
        wrapper.done();
        for (const k of set.keys) zeroize(k.dek);
      }
    }
  }
}

/**
 * POST /v1/changes: every member is parsed and authorised (write, or delete)
 * before anything is written; then one transaction commits them all.
 */
async function writeChangeSet(req: IncomingMessage, deps: RestDeps, principal: Principal): Promise<RestResult> {
  const subject = principal.subject;
  const body = parseBody(changeSetBody, await readJson(req, deps.maxBody));
  if (body.changes.length > CHANGE_SET_MAX_CHANGES) {
    throw new AppError('payload_too_large', `A change set holds at most ${CHANGE_SET_MAX_CHANGES} changes, not ${body.changes.length}; split it into several sets.`);
  }
  const ops: ChangeOp[] = [];
  try {
    await changeOpsOf(body.changes, deps, principal, 'change set', ops);
    const result = await deps.controlPlane.writeChangeSet(ops, subject);
    await audit(deps, subject, 'write', result.items.map((i) => i.item).join(',').slice(0, 400), 'ok', `change set revision=${result.revision} changes=${ops.length}`);
    return { status: 200, body: result };
  } finally {
    for (const op of ops) if (op.op === 'put') zeroize(op.value);
  }
}

/**
 * Parses and authorises each member (write, or delete) into `ops` (the caller
 * zero-fills their values, also when this throws part way).
 */
export async function changeOpsOf(changes: readonly ChangeEntry[], deps: RestDeps, principal: Principal, what: string, ops: ChangeOp[]): Promise<void> {
  const subject = principal.subject;
  for (const [index, change] of changes.entries()) {
    let ref: ItemRef;
    try {
      ref = parseItemPath(change.item);
    } catch (err) {
      throw new AppError('invalid_argument', `changes.${index}.item: ${toAppError(err).message}`);
    }
    const action = 'delete' in change ? 'delete' : 'write';
    if (!deps.policy().allows(principal.identity, action, ref.namespace)) {
      await audit(deps, subject, 'denied', itemKey(ref), 'denied', `${action} ${what}`);
      throw new AppError('permission_denied', `${subject} may not ${action} ${ref.namespace} (changes.${index}); nothing was written.`);
    }
    if ('delete' in change) {
      ops.push({ op: 'delete', ref, env: change.env === undefined ? undefined : checkEnv(deps, change.env) });
    } else {
      const ring = ringWriteOf(change, `changes.${index}.`);
      ops.push({ op: 'put', ref, env: checkEnv(deps, change.env), kind: change.kind, value: valueBytes(change), ...(ring ? { ring } : {}) });
    }
  }
}

/**
 * GET /v1/agents: the caller needs `agents:read` somewhere; an agent is listed
 * when one of those grants covers one of its prefixes.
 */
async function listAgents(deps: RestDeps, principal: Principal): Promise<RestResult> {
  const policy = deps.policy();
  const { subject } = principal;
  if (!policy.holdsAnywhere(principal.identity, 'agents:read')) {
    await audit(deps, subject, 'denied', '', 'denied', 'agents:read');
    throw new AppError('permission_denied', `${subject} may not list agents; grant the agents:read action on the namespaces whose agents it may see.`);
  }
  if (!deps.agents) throw new AppError('unavailable', 'The fleet view is not enabled on this server.');
  const view = await deps.agents.list((row) => row.prefixes.some((prefix) => policy.allows(principal.identity, 'agents:read', prefix)));
  return { status: 200, body: view };
}

/**
 * GET /v1/keys: the age of each namespace's current data key (metadata, never
 * key material), for the namespaces the caller may `list`; like the fleet
 * view, a caller that may list nothing anywhere is refused rather than shown
 * an empty page.
 */
async function listKeyAges(deps: RestDeps, principal: Principal): Promise<RestResult> {
  const policy = deps.policy();
  const { subject } = principal;
  if (!policy.holdsAnywhere(principal.identity, 'list')) {
    await audit(deps, subject, 'denied', '', 'denied', 'list keys');
    throw new AppError('permission_denied', `${subject} may not see key ages; grant the list action on the namespaces whose keys it may see.`);
  }
  const keys = (await deps.controlPlane.keyAges()).filter((k) => policy.allows(principal.identity, 'list', k.namespace));
  const body: KeysResponse = { keys };
  return { status: 200, body };
}

function ringDetail(ring: RingWrite | undefined): string {
  if (!ring) return '';
  return `${ring.grace === undefined ? '' : ` ringGrace=${ring.grace}ms`}${ring.revokePrevious ? ' revokePrevious' : ''}`;
}

/** GET ?ring=1: the current value and the previous versions within their grace (audited like a read). */
async function getRing(ref: ItemRef, env: string, req: IncomingMessage, deps: RestDeps, subject: string): Promise<RestResult> {
  const ring = await deps.controlPlane.getRing(ref, env);
  const plaintexts = [ring.current.value, ...ring.previous.map((p) => p.value)];
  try {
    if (ring.kind === 'secret') await auditRead(deps, subject, 'read', itemKey(ref), `env=${env} ring versions=${[ring.current.version, ...ring.previous.map((p) => p.version)].join(',')}`);
    const headers = { etag: ring.etag, 'x-config-revision': String(ring.revision) };
    if (req.headers['if-none-match'] === ring.etag) return { status: 304, headers };
    return { status: 200, headers, raw: ringJson(ring), sensitive: true };
  } finally {
    zeroize(...plaintexts);
  }
}

/** Secret bodies become bytes here; the string in the parsed JSON cannot be wiped, the Buffer can. */
function valueBytes(body: z.infer<typeof putItemBody> | Exclude<ChangeEntry, { delete: true }>): Buffer {
  if (body.kind === 'config') return Buffer.from(JSON.stringify(body.value), 'utf8');
  if ('valueBase64' in body) return Buffer.from(body.valueBase64, 'base64');
  return Buffer.from(body.value, 'utf8');
}

/**
 * Builds the GET body around the plaintext bytes without parsing them: a config
 * value is already JSON; a secret is UTF-8 text when valid, else base64.
 */
export function itemJson(ref: ItemRef, kind: ItemKind, env: string, item: { version: number; revision: number; etag: string; value: Buffer }): Buffer {
  const head = { namespace: ref.namespace, name: ref.name, kind, env, version: item.version, revision: item.revision, etag: item.etag };
  const prefix = Buffer.from(`${JSON.stringify(head).slice(0, -1)},"value":`, 'utf8');
  let value: Buffer;
  let suffix = '}';
  if (kind === 'config') {
    value = item.value;
  } else if (isUtf8(item.value)) {
    value = Buffer.from(JSON.stringify(item.value.toString('utf8')), 'utf8');
  } else {
    value = Buffer.from(`"${item.value.toString('base64')}"`, 'utf8');
    suffix = ',"encoding":"base64"}';
  }
  const out = Buffer.concat([prefix, value, Buffer.from(suffix)]);
  if (value !== item.value) zeroize(value);
  return out;
}

/**
 * Reads of secrets, envelopes and DEKs fail closed: no audit entry, no answer
 * (as Vault does), so a secret is never served unrecorded.
 */
export async function auditRead(deps: RestDeps, subject: string, action: AuditAction, target: string, detail: string): Promise<void> {
  try {
    await deps.controlPlane.audit({ subject, action, target, outcome: 'ok', detail });
  } catch (err) {
    deps.logger.error({ err: (err as Error).message, subject, action, target }, 'audit write failed; refusing the read');
    throw new AppError('store_unavailable', 'The read could not be audited, so it is refused.', { cause: err });
  }
}

/** Denials and writes (already committed) are audited best effort: a failure is logged, the answer stands. */
export async function audit(deps: RestDeps, subject: string, action: AuditAction, target: string, outcome: 'ok' | 'denied' | 'error', detail?: string): Promise<void> {
  try {
    await deps.controlPlane.audit({ subject, action, target, outcome, ...(detail ? { detail } : {}) });
  } catch (err) {
    deps.logger.error({ err: (err as Error).message, subject, action, target }, 'audit write failed');
  }
}
