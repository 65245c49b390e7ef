/**
 * The `--auth-file` YAML (docs/AUTH.md): static tokens stored only as SHA-256
 * hashes, the subjects they stand for, roles and bindings. Parsed strictly
 * (unknown keys refused, naming the path) into a `PolicyDocument`.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { validatePrefix } from '../../shared/paths.ts';
import { describeUnknownKeys } from '../../shared/suggest.ts';
import { jwtBindingKey, tokenBindingKey } from './identity.ts';
import { ACTIONS, ALL_NAMESPACES, type Grant, type PolicyDocument } from './policy.ts';

const prefixSchema = z.string().refine((p) => {
  if (p === ALL_NAMESPACES) return true;
  try {
    validatePrefix(p);
    return true;
  } catch {
    return false;
  }
}, 'is not a namespace prefix (segments of a-z 0-9 . _ -) or "*"');

const authFileSchema = z
  .object({
    version: z.literal(1).default(1),
    subjects: z
      .array(
        z
          .object({
            name: z.string().min(1),
            tokens: z
              .array(
                z
                  .object({
                    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the lowercase hex SHA-256 of the token'),
                    expires: z.coerce.date().optional(),
                    description: z.string().optional(),
                  })
                  .strict(),
              )
              .default([]),
          })
          .strict(),
      )
      .default([]),
    roles: z
      .array(
        z
          .object({
            name: z.string().min(1),
            rules: z.array(z.object({ prefixes: z.array(prefixSchema).min(1), actions: z.array(z.enum(ACTIONS)).min(1) }).strict()).min(1),
          })
          .strict(),
      )
      .default([]),
    bindings: z.array(z.object({ role: z.string().min(1), subjects: z.array(z.string().min(1)).min(1) }).strict()).default([]),
  })
  .strict();

export class AuthFileError extends Error {
  override readonly name = 'AuthFileError';
}

export function sha256Hex(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function parseAuthFile(text: string): PolicyDocument {
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (err) {
    throw new AuthFileError(`not valid YAML: ${(err as Error).message}`);
  }
  const result = authFileSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues.find((i) => i.code === 'unrecognized_keys') ?? result.error.issues[0];
    const at = issue?.path.join('.') || '(top level)';
    const what = issue?.code === 'unrecognized_keys' ? describeUnknownKeys(issue.keys, authFileSchema, issue.path) : issue?.message;
    throw new AuthFileError(`${at}: ${what}`);
  }
  const file = result.data;
  const tokens = new Map<string, { subject: string; expiresAt?: number }>();
  for (const subject of file.subjects) {
    for (const token of subject.tokens) {
      if (tokens.has(token.sha256)) throw new AuthFileError(`subjects.${subject.name}: a token hash is listed twice`);
      tokens.set(token.sha256, { subject: subject.name, ...(token.expires ? { expiresAt: token.expires.getTime() } : {}) });
    }
  }
  const roles = new Map<string, Grant[]>();
  for (const role of file.roles) {
    if (roles.has(role.name)) throw new AuthFileError(`roles: "${role.name}" is defined twice`);
    roles.set(role.name, role.rules);
  }
  // A binding names a static-token subject when one is declared under that name,
  // otherwise a service-account JWT `sub`: the two never share a binding.
  const staticNames = new Set(file.subjects.map((s) => s.name));
  const bindings = new Map<string, string[]>();
  for (const binding of file.bindings) {
    if (!roles.has(binding.role)) throw new AuthFileError(`bindings: role "${binding.role}" is not defined under roles`);
    for (const subject of binding.subjects) {
      const key = staticNames.has(subject) ? tokenBindingKey(subject) : jwtBindingKey(subject);
      bindings.set(key, [...(bindings.get(key) ?? []), binding.role]);
    }
  }
  return { tokens, roles, bindings };
}

export async function loadAuthFile(path: string): Promise<PolicyDocument> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new AuthFileError(`cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseAuthFile(text);
}
