/**
 * RBAC, deny by default: roles grant actions on namespace prefixes (whole
 * segments) and bindings give roles to subjects. A `Policy` is immutable; a new
 * auth file produces a new one and the listeners swap it atomically.
 */
import { namespaceMatchesPrefix } from '../../shared/paths.ts';
import { bindingKeyOf, type Identity } from './identity.ts';

/** `agents:read` lists the agents whose prefixes a grant covers (GET /v1/agents). */
export const ACTIONS = ['read', 'list', 'write', 'delete', 'rotate', 'admin', 'agents:read'] as const;
export type Action = (typeof ACTIONS)[number];

/** A prefix of `*` grants on every namespace. */
export const ALL_NAMESPACES = '*';

export interface Grant {
  readonly prefixes: readonly string[];
  readonly actions: readonly Action[];
}

export interface PolicyDocument {
  /** sha256 hex of the token → subject. */
  readonly tokens: ReadonlyMap<string, { readonly subject: string; readonly expiresAt?: number | undefined }>;
  /** role name → grants */
  readonly roles: ReadonlyMap<string, readonly Grant[]>;
  /** binding key (`tokenBindingKey` / `jwtBindingKey`) → role names */
  readonly bindings: ReadonlyMap<string, readonly string[]>;
}

export class Policy {
  readonly doc: PolicyDocument;

  constructor(doc: PolicyDocument) {
    this.doc = doc;
  }

  static empty(): Policy {
    return new Policy({ tokens: new Map(), roles: new Map(), bindings: new Map() });
  }

  #grants(key: string): Grant[] {
    return (this.doc.bindings.get(key) ?? []).flatMap((role) => this.doc.roles.get(role) ?? []);
  }

  /**
   * May `subject` do `action` on everything under `namespace`? `admin` implies
   * every action. The namespace must lie under a granted prefix, so a grant on
   * `production/ml` never covers `production` nor `production/ml-admin`. Only
   * the root token is root: no name (a JWT `sub` of "root") grants it.
   */
  /** Does `identity` hold `action` on at least one prefix (so a filtered list is an answer, not a 403)? */
  holdsAnywhere(identity: Identity, action: Action): boolean {
    const key = bindingKeyOf(identity);
    if (key === undefined) return true;
    return this.#grants(key).some((grant) => grant.actions.includes(action) || grant.actions.includes('admin'));
  }

  allows(identity: Identity, action: Action, namespace: string): boolean {
    const key = bindingKeyOf(identity);
    if (key === undefined) return true;
    return this.#grants(key).some(
      (grant) =>
        (grant.actions.includes(action) || grant.actions.includes('admin')) &&
        grant.prefixes.some((prefix) => prefix === ALL_NAMESPACES || namespaceMatchesPrefix(namespace, prefix)),
    );
  }
}
