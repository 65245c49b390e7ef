/**
 * Bearer token → principal. Three kinds (identity.ts), tried in order: the bootstrap root
 * token, static tokens from the auth file (compared by SHA-256 hash, so the
 * file never holds a token), and Kubernetes service-account JWTs verified with
 * `jose` against the configured issuer, JWKS and audience. Time comes from the
 * injectable Clock so expiry is testable.
 */
import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { AppError } from '../../shared/errors.ts';
import type { Clock } from '../../shared/clock.ts';
import { sha256Hex } from './auth-file.ts';
import { podFromClaims, podKeyOf, subjectLabel, type Identity } from './identity.ts';
import type { Policy } from './policy.ts';

/**
 * Signature algorithms a service-account JWT may use (what Kubernetes issuers
 * sign with). Pinned so a key is never used with an algorithm it was not meant
 * for, whatever the token's header or the JWKS entry says.
 */
export const JWT_ALGORITHMS = ['RS256', 'ES256'] as const;

export interface Principal {
  readonly identity: Identity;
  /** What audit rows and refusals name (`subjectLabel`). */
  readonly subject: string;
  /** What per-caller limits key on (`podKeyOf`). */
  readonly podKey: string;
  readonly via: Identity['kind'];
  /** Epoch ms after which the credential is no longer valid (watch streams end then). */
  readonly expiresAt?: number | undefined;
  /** For static tokens: the SHA-256 the auth file lists, so a reload can tell whether it was revoked. */
  readonly tokenSha256?: string | undefined;
  /** For a service-account JWT bound to a pod: the `kubernetes.io.pod.name` claim (the only agent id it may report as). */
  readonly podName?: string | undefined;
}

export interface JwtSettings {
  readonly issuer: string;
  readonly audience: string;
  readonly jwksUrl?: string | undefined;
  readonly jwksFile?: string | undefined;
}

export interface Authenticator {
  authenticate(authorization: string | undefined): Promise<Principal>;
}

const BEARER_RE = /^Bearer\s+(\S+)\s*$/i;
const JWT_RE = /^[\w-]+\.[\w-]+\.[\w-]*$/;

export async function jwksFrom(settings: JwtSettings): Promise<JWTVerifyGetKey> {
  if (settings.jwksUrl) return createRemoteJWKSet(new URL(settings.jwksUrl));
  const text = await readFile(settings.jwksFile as string, 'utf8');
  return createLocalJWKSet(JSON.parse(text) as Parameters<typeof createLocalJWKSet>[0]);
}

export function createAuthenticator(options: {
  readonly rootToken?: string | undefined;
  readonly policy: () => Policy;
  readonly jwt?: { readonly settings: JwtSettings; readonly keys: JWTVerifyGetKey } | undefined;
  readonly clock: Clock;
}): Authenticator {
  const rootHash = options.rootToken ? Buffer.from(sha256Hex(options.rootToken), 'hex') : undefined;
  return {
    async authenticate(authorization) {
      const match = BEARER_RE.exec(authorization ?? '');
      if (!match) throw new AppError('unauthenticated', 'Send "Authorization: Bearer <token>".');
      const token = match[1] as string;
      const hash = sha256Hex(token);
      if (rootHash && timingSafeEqual(rootHash, Buffer.from(hash, 'hex'))) return principalOf({ kind: 'root' });
      const entry = options.policy().doc.tokens.get(hash);
      if (entry) {
        if (entry.expiresAt !== undefined && entry.expiresAt <= options.clock.now()) {
          throw new AppError('unauthenticated', 'The token has expired.');
        }
        return { ...principalOf({ kind: 'token', name: entry.subject, tokenSha256: hash }), expiresAt: entry.expiresAt, tokenSha256: hash };
      }
      if (options.jwt && JWT_RE.test(token)) {
        try {
          const { payload } = await jwtVerify(token, options.jwt.keys, {
            issuer: options.jwt.settings.issuer,
            audience: options.jwt.settings.audience,
            currentDate: new Date(options.clock.now()),
            requiredClaims: ['sub', 'exp'],
            algorithms: [...JWT_ALGORITHMS],
          });
          const identity: Identity = { kind: 'jwt', issuer: options.jwt.settings.issuer, sub: payload.sub as string, pod: podFromClaims(payload) };
          const podName = (payload['kubernetes.io'] as { pod?: { name?: unknown } } | undefined)?.pod?.name;
          return { ...principalOf(identity), expiresAt: (payload.exp as number) * 1000, ...(typeof podName === 'string' ? { podName } : {}) };
        } catch (err) {
          // The reason (expired, audience, signature) helps the operator; it holds no token.
          throw new AppError('unauthenticated', `The service-account token was refused: ${(err as { code?: string }).code ?? 'invalid'}.`);
        }
      }
      throw new AppError('unauthenticated', 'The bearer token is not recognised.');
    },
  };
}

function principalOf(identity: Identity): Principal {
  return { identity, subject: subjectLabel(identity), podKey: podKeyOf(identity), via: identity.kind };
}
