/**
 * RFC 6902 JSON Patch, as much as the injector needs: small builders that
 * create an array or map when it is absent and otherwise append (`/-`) or set
 * one key, with RFC 6901 pointer escaping (`~` → `~0`, `/` → `~1`, so an
 * annotation key like `config-sidecar.io/status` becomes one segment), and
 * an applier for the `add` operations they emit (used by the offline
 * `inject`, so it shares the webhook's exact patch).
 */

export interface AddOperation {
  readonly op: 'add';
  readonly path: string;
  readonly value: unknown;
}

export interface ReplaceOperation {
  readonly op: 'replace';
  readonly path: string;
  readonly value: unknown;
}

export interface RemoveOperation {
  readonly op: 'remove';
  readonly path: string;
}

export type PatchOperation = AddOperation | ReplaceOperation | RemoveOperation;

/** Escapes one reference token (RFC 6901 §3). */
export function escapePointerToken(token: string | number): string {
  return String(token).replace(/~/g, '~0').replace(/\//g, '~1');
}

export function unescapePointerToken(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Joins tokens into a JSON Pointer: `pointer('metadata', 'annotations', 'a/b')` → `/metadata/annotations/a~1b`. */
export function pointer(...tokens: ReadonlyArray<string | number>): string {
  return tokens.map((t) => `/${escapePointerToken(t)}`).join('');
}

/**
 * Collects operations against one document. It remembers which containers it
 * created so a second append to a new array uses `/-` instead of replacing it.
 */
export class PatchBuilder {
  readonly #ops: PatchOperation[] = [];
  readonly #created = new Set<string>();

  get operations(): readonly PatchOperation[] {
    return this.#ops;
  }

  /** Appends to the array at `path` (`existing` is its current value, if any). */
  append(path: string, existing: readonly unknown[] | undefined, value: unknown): this {
    if (existing === undefined && !this.#created.has(path)) {
      this.#created.add(path);
      this.#ops.push({ op: 'add', path, value: [value] });
    } else {
      this.#ops.push({ op: 'add', path: `${path}/-`, value });
    }
    return this;
  }

  /** Inserts at the front of the array at `path`, creating it when absent. */
  prepend(path: string, existing: readonly unknown[] | undefined, value: unknown): this {
    if (existing === undefined && !this.#created.has(path)) {
      this.#created.add(path);
      this.#ops.push({ op: 'add', path, value: [value] });
    } else {
      this.#ops.push({ op: 'add', path: `${path}/0`, value });
    }
    return this;
  }

  /** Replaces the existing value at `path`. */
  replace(path: string, value: unknown): this {
    this.#ops.push({ op: 'replace', path, value });
    return this;
  }

  /** Removes the value at `path` (array indices shift: remove from the highest index down). */
  remove(path: string): this {
    this.#ops.push({ op: 'remove', path });
    return this;
  }

  /** Sets `key` in the object at `path`, creating the object when absent. */
  setKey(path: string, existing: object | undefined, key: string, value: unknown): this {
    if (existing === undefined && !this.#created.has(path)) {
      this.#created.add(path);
      this.#ops.push({ op: 'add', path, value: { [key]: value } });
    } else {
      this.#ops.push({ op: 'add', path: `${path}/${escapePointerToken(key)}`, value });
    }
    return this;
  }
}

/**
 * Applies the builders' operations to a deep copy of `doc` (RFC 6902: `add`
 * with `-` appends, with an index inserts, on a member sets; `replace` needs
 * an existing target; `remove` deletes it).
 */
export function applyPatch<T>(doc: T, ops: readonly PatchOperation[]): T {
  const root = structuredClone(doc) as unknown;
  for (const op of ops) {
    const tokens = op.path.split('/').slice(1).map(unescapePointerToken);
    const last = tokens.pop();
    if (last === undefined) throw new Error(`cannot patch the document root (${op.path})`);
    let target: unknown = root;
    for (const token of tokens) {
      target = Array.isArray(target) ? target[Number(token)] : (target as Record<string, unknown> | undefined)?.[token];
      if (target === null || typeof target !== 'object') throw new Error(`patch path ${op.path} does not exist`);
    }
    if (op.op !== 'add' && !(Array.isArray(target) ? Number(last) < target.length : Object.hasOwn(target as object, last))) {
      throw new Error(`patch path ${op.path} does not exist`);
    }
    if (Array.isArray(target)) {
      if (op.op === 'remove') target.splice(Number(last), 1);
      else if (op.op === 'replace') target[Number(last)] = structuredClone(op.value);
      else if (last === '-') target.push(structuredClone(op.value));
      else target.splice(Number(last), 0, structuredClone(op.value));
    } else if (op.op === 'remove') {
      delete (target as Record<string, unknown>)[last];
    } else {
      (target as Record<string, unknown>)[last] = structuredClone(op.value);
    }
  }
  return root as T;
}
