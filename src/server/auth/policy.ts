/**
 * RBAC, deny by default: roles grant actions on namespace prefixes (whole
 * segments) and bindings give roles to subjects. A `Policy` is immutable; a new
 * auth file produces a new one and the listeners swap it atomically.
 */
import { namespaceMatchesPrefix } from '../../shared/paths.ts';

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
  /** subject → role names */
  readonly bindings: ReadonlyMap<string, readonly string[]>;
}

/** The subject the root token authenticates as; it may do everything. */
export const ROOT_SUBJECT = 'root';

export class Policy {
  readonly doc: PolicyDocument;
  readonly #rootSubjects: ReadonlySet<string>;

  constructor(doc: PolicyDocument, rootSubjects: readonly string[] = [ROOT_SUBJECT]) {
    this.doc = doc;
    this.#rootSubjects = new Set(rootSubjects);
  }

  static empty(): Policy {
    return new Policy({ tokens: new Map(), roles: new Map(), bindings: new Map() });
  }

  #grants(subject: string): Grant[] {
    return (this.doc.bindings.get(subject) ?? []).flatMap((role) => this.doc.roles.get(role) ?? []);
  }

  /**
   * May `subject` do `action` on everything under `namespace`? `admin` implies
   * every action. The namespace must lie under a granted prefix, so a grant on
   * `production/ml` never covers `production` nor `production/ml-admin`.
   */
  /** Does `subject` hold `action` on at least one prefix (so a filtered list is an answer, not a 403)? */
  holdsAnywhere(subject: string, action: Action): boolean {
    if (this.#rootSubjects.has(subject)) return true;
    return this.#grants(subject).some((grant) => grant.actions.includes(action) || grant.actions.includes('admin'));
  }

  allows(subject: string, action: Action, namespace: string): boolean {
    if (this.#rootSubjects.has(subject)) return true;
    return this.#grants(subject).some(
      (grant) =>
        (grant.actions.includes(action) || grant.actions.includes('admin')) &&
        grant.prefixes.some((prefix) => prefix === ALL_NAMESPACES || namespaceMatchesPrefix(namespace, prefix)),
    );
  }
}
