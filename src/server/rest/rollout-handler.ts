/**
 * The /v1/rollouts operations and the candidate reads (`?rollout=`, and an
 * identified canary agent's envelope). RBAC follows change sets and the fleet
 * view: starting needs write (delete) on every member's namespace, an
 * operator's action needs write on every item's namespace, and seeing a
 * rollout (its items and canary agents) needs agents:read on every item's
 * namespace; without any agents:read grant the list is a 403, as GET /v1/agents.
 */
import type { IncomingMessage } from 'node:http';
import { zeroize } from '../../shared/crypto.ts';
import { AppError } from '../../shared/errors.ts';
import { readJson } from '../../shared/http-io.ts';
import { AGENT_ID_RE } from '../../shared/fleet-proto.ts';
import { itemKey, parseItemPath, type ItemRef } from '../../shared/paths.ts';
import { HEADERS, rolloutStartBody, type RolloutAction, type RolloutsResponse } from '../../shared/protocol.ts';
import type { Principal } from '../auth/authenticator.ts';
import type { Action } from '../auth/policy.ts';
import type { ChangeOp } from '../control-plane.ts';
import { rolloutView, type RolloutRecord } from '../rollouts/rollout-record.ts';
import type { RolloutService } from '../rollouts/rollout-service.ts';
import { audit, auditRead, changeOpsOf, checkEnv, itemJson, parseBody, type RestDeps, type RestResult } from './rest-handler.ts';

const NO_STORE = { 'cache-control': 'no-store' } as const;

function service(deps: RestDeps): RolloutService {
  if (!deps.rollouts) throw new AppError('unavailable', 'Staged rollouts are not enabled on this server.');
  return deps.rollouts;
}

const namespaces = (record: RolloutRecord): string[] => [...new Set(record.items.map((item) => parseItemPath(item).namespace))];

function allowedOnAll(deps: RestDeps, principal: Principal, action: Action, record: RolloutRecord): boolean {
  const policy = deps.policy();
  return namespaces(record).every((ns) => policy.allows(principal.identity, action, ns));
}

async function refuse(deps: RestDeps, principal: Principal, action: Action, record: RolloutRecord): Promise<never> {
  await audit(deps, principal.subject, 'denied', record.id, 'denied', `${action} rollout`);
  throw new AppError('permission_denied', `${principal.subject} may not ${action} ${namespaces(record).join(', ')} (rollout ${record.id}); grant ${action} on every namespace it changes.`);
}

/** POST /v1/rollouts */
export async function startRollout(req: IncomingMessage, deps: RestDeps, principal: Principal): Promise<RestResult> {
  const rollouts = service(deps);
  const body = parseBody(rolloutStartBody, await readJson(req, deps.maxBody));
  const ops: ChangeOp[] = [];
  try {
    await changeOpsOf(body.changes, deps, principal, 'rollout', ops);
    const ringed = ops.findIndex((op) => op.op === 'put' && op.ring !== undefined);
    if (ringed >= 0) throw new AppError('invalid_argument', `changes.${ringed}: key-ring options (ringGrace, revokePrevious) are not part of a staged rollout; write the ring with POST /v1/changes.`);
    const record = await rollouts.start({ steps: body.steps, bakeSeconds: body.bakeSeconds, maxUnhealthy: body.maxUnhealthy, changes: ops }, principal.subject);
    await audit(deps, principal.subject, 'rollout', `${record.id}: ${record.items.join(',')}`.slice(0, 400), 'ok', `started steps=${body.steps.join(',')} canary=${record.canary.length}`);
    return { status: 201, headers: NO_STORE, body: rolloutView(record) };
  } finally {
    for (const op of ops) if (op.op === 'put') zeroize(op.value);
  }
}

/** GET /v1/rollouts: those whose every namespace the caller holds agents:read on. */
export async function listRollouts(deps: RestDeps, principal: Principal): Promise<RestResult> {
  const rollouts = service(deps);
  if (!deps.policy().holdsAnywhere(principal.identity, 'agents:read')) {
    await audit(deps, principal.subject, 'denied', '', 'denied', 'agents:read rollouts');
    throw new AppError('permission_denied', `${principal.subject} may not list rollouts; grant the agents:read action on the namespaces they change.`);
  }
  const visible = (await rollouts.list()).filter((record) => allowedOnAll(deps, principal, 'agents:read', record));
  const status = await rollouts.canaryStatus(visible);
  return { status: 200, headers: NO_STORE, body: { rollouts: visible.map((record) => rolloutView(record, status.get(record.id))) } satisfies RolloutsResponse };
}

/** GET /v1/rollouts/{id} */
export async function getRollout(id: string, deps: RestDeps, principal: Principal): Promise<RestResult> {
  const rollouts = service(deps);
  const record = await rollouts.get(id);
  if (!allowedOnAll(deps, principal, 'agents:read', record)) await refuse(deps, principal, 'agents:read', record);
  return { status: 200, headers: NO_STORE, body: rolloutView(record, (await rollouts.canaryStatus([record])).get(record.id)) };
}

/** POST /v1/rollouts/{id}/{promote|pause|resume|abort}, without a body. */
export async function actOnRollout(id: string, action: RolloutAction, deps: RestDeps, principal: Principal): Promise<RestResult> {
  const rollouts = service(deps);
  const record = await rollouts.get(id);
  if (!allowedOnAll(deps, principal, 'write', record)) await refuse(deps, principal, 'write', record);
  const after = await rollouts.act(id, action, principal.subject);
  await audit(deps, principal.subject, 'rollout', `${id}: ${record.items.join(',')}`.slice(0, 400), 'ok', `${action}: now ${after.state}`);
  return { status: 200, headers: NO_STORE, body: rolloutView(after) };
}

/**
 * The rollout whose candidate an envelope read gets: the one asked for with
 * ?rollout=, or, for a canary agent naming itself in the agent-id header,
 * the active rollout holding the item; undefined: the stable version.
 */
export async function envelopeRollout(req: IncomingMessage, ref: ItemRef, asked: string | undefined, deps: RestDeps, principal: Principal): Promise<string | undefined> {
  if (asked !== undefined) return asked;
  const agentId = req.headers[HEADERS.agentId];
  if (!deps.rollouts || typeof agentId !== 'string' || !AGENT_ID_RE.test(agentId)) return undefined;
  return deps.rollouts.candidateFor(ref, agentId, principal);
}

/** GET /v1/envelopes/...: the candidate, marked with its rollout. */
export async function candidateEnvelope(ref: ItemRef, env: string | undefined, rollout: string, deps: RestDeps, subject: string): Promise<RestResult> {
  const checked = checkEnv(deps, env);
  const envelope = await deps.controlPlane.candidateEnvelope(ref, checked, rollout);
  await auditRead(deps, subject, 'envelope', itemKey(ref), `env=${checked} rollout=${rollout}`);
  return { status: 200, headers: { etag: envelope.etag, 'x-config-revision': String(envelope.revision) }, body: { ...envelope, rollout } };
}

/** GET /v1/items/...?rollout=ID */
export async function candidateItem(req: IncomingMessage, ref: ItemRef, env: string | undefined, rollout: string, deps: RestDeps, subject: string): Promise<RestResult> {
  const checked = checkEnv(deps, env);
  const item = await deps.controlPlane.candidateItem(ref, checked, rollout);
  try {
    if (item.kind === 'secret') await auditRead(deps, subject, 'read', itemKey(ref), `env=${checked} rollout=${rollout}`);
    const headers = { etag: item.etag, 'x-config-revision': String(item.revision) };
    if (req.headers['if-none-match'] === item.etag) return { status: 304, headers };
    return { status: 200, headers, raw: itemJson(ref, item.kind, checked, item), sensitive: true };
  } finally {
    zeroize(item.value);
  }
}
