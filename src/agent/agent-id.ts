/**
 * Which id this agent reports under. A service-account token bound to a pod
 * names the pod (`kubernetes.io.pod.name`): that is the id, and a different
 * --agent-id is refused here (the server would refuse every report anyway).
 * Otherwise --agent-id, else POD_NAME (set by the injector from the downward
 * API), else the hostname. The token is decoded, not verified: the server
 * verifies it; this only reads which pod it claims.
 */
import { hostname } from 'node:os';
import { AGENT_ID_RE } from '../shared/fleet-proto.ts';
import { SettingError } from '../shared/settings.ts';

const AGENT_ID_SETTING = '--agent-id (CONFIG_SIDECAR_AGENT_ID)';

/** The pod name a JWT claims, or undefined for anything else (a static token, no token). */
export function podNameOfToken(token: string | undefined): string | undefined {
  const payload = token?.split('.')[1];
  if (!token || token.split('.').length !== 3 || !payload) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { 'kubernetes.io'?: { pod?: { name?: unknown } } };
    const name = claims['kubernetes.io']?.pod?.name;
    return typeof name === 'string' && name !== '' ? name : undefined;
  } catch {
    return undefined;
  }
}

export function resolveAgentId(configured: string | undefined, token: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const pod = podNameOfToken(token);
  if (pod !== undefined) {
    if (configured !== undefined && configured !== pod) {
      throw new SettingError(AGENT_ID_SETTING, `is "${configured}" but the service-account token belongs to pod "${pod}"; leave it unset (the pod name is used) or set it to "${pod}"`);
    }
    return pod;
  }
  if (configured !== undefined) return configured;
  const fromEnv = env.POD_NAME;
  if (fromEnv && AGENT_ID_RE.test(fromEnv)) return fromEnv;
  return hostname();
}
