/**
 * Who a request is, as kinds that cannot collide: the root token, a static
 * token's subject from the auth file, or a service-account JWT's issuer + sub.
 * A JWT whose `sub` is "root" or a static subject's name is neither of them.
 *
 * The pod key is what per-caller limits (REST rate limit, Watch stream caps,
 * Watch opens) count against: the pod a projected service-account token was
 * issued for (its `kubernetes.io.pod` claim), or the static token itself, never
 * the service account, which every replica of a Deployment shares.
 */
export type Identity =
  | { readonly kind: 'root' }
  | { readonly kind: 'token'; readonly name: string; readonly tokenSha256: string }
  | { readonly kind: 'jwt'; readonly issuer: string; readonly sub: string; readonly pod?: string | undefined };

/** The key RBAC bindings are looked up by (`bindingKey` of the auth file's names). */
export function bindingKeyOf(identity: Identity): string | undefined {
  switch (identity.kind) {
    case 'root':
      return undefined;
    case 'token':
      return tokenBindingKey(identity.name);
    case 'jwt':
      return jwtBindingKey(identity.sub);
  }
}

export function tokenBindingKey(name: string): string {
  return `token:${name}`;
}

/** Only one issuer is configured per server, so the sub alone names the binding. */
export function jwtBindingKey(sub: string): string {
  return `jwt:${sub}`;
}

/** The label audit rows, logs and refusals show: a JWT subject is marked as one. */
export function subjectLabel(identity: Identity): string {
  switch (identity.kind) {
    case 'root':
      return 'root';
    case 'token':
      return identity.name;
    case 'jwt':
      return `jwt:${identity.sub}`;
  }
}

/** Per-pod key for rate limits and stream caps (see the module comment). */
export function podKeyOf(identity: Identity): string {
  switch (identity.kind) {
    case 'root':
      return 'root';
    case 'token':
      return `token-sha256:${identity.tokenSha256}`;
    case 'jwt':
      return identity.pod === undefined ? `jwt:${identity.issuer} ${identity.sub}` : `pod:${identity.pod}`;
  }
}

/**
 * The pod a projected token names: `kubernetes.io: { namespace, pod: { name, uid } }`.
 * The uid is preferred (a pod name is reused by a StatefulSet's next pod).
 */
export function podFromClaims(claims: Record<string, unknown>): string | undefined {
  const k8s = claims['kubernetes.io'];
  if (typeof k8s !== 'object' || k8s === null) return undefined;
  const { namespace, pod } = k8s as { namespace?: unknown; pod?: unknown };
  if (typeof pod !== 'object' || pod === null) return undefined;
  const { name, uid } = pod as { name?: unknown; uid?: unknown };
  if (typeof uid === 'string' && uid !== '') return `uid:${uid.slice(0, 64)}`;
  if (typeof name === 'string' && name !== '' && typeof namespace === 'string') return `${namespace.slice(0, 64)}/${name.slice(0, 253)}`;
  return undefined;
}
