/**
 * Envelope encryption and DEK transport (DESIGN.md §3), shared by the server
 * (which seals values and wraps DEKs for agents) and the agent (which unwraps
 * DEKs and opens values locally). Everything here is `node:crypto`.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { AppError } from './errors.ts';

export const DEK_BYTES = 32;
export const IV_BYTES = 12;
export const TAG_BYTES = 16;
const CIPHER = 'aes-256-gcm';

/** A sealed value: AES-256-GCM output, all fields raw bytes. */
export interface Sealed {
  readonly iv: Buffer;
  readonly ciphertext: Buffer;
  readonly tag: Buffer;
}

/** The same, base64 encoded, as it crosses the wire. */
export interface SealedWire {
  readonly iv: string;
  readonly ciphertext: string;
  readonly tag: string;
}

/** What the AAD of a stored value binds: its identity, its place and the key that sealed it. */
export interface ValueIdentity {
  readonly namespace: string;
  readonly name: string;
  readonly version: number;
  /** The environment layer the version belongs to (bound from AAD v2). */
  readonly env: string;
  /** The item's kind (bound from AAD v2). */
  readonly kind: 'config' | 'secret';
  /** The DEK's id; by convention the namespace it belongs to. */
  readonly keyId: string;
  readonly keyVersion: number;
}

/**
 * AAD layouts. v1 bound the item, version and key only, so a row whose `env`
 * column was swapped with another's still opened (prod served a sandbox
 * secret); v2 also binds the env layer, the kind and that the row is a live
 * value (not a tombstone). Everything is sealed with v2; v1 is still opened
 * while the store re-seals old rows at start, and by agents talking to an
 * older server.
 */
export const AAD_VERSIONS = [1, 2] as const;
export type AadVersion = (typeof AAD_VERSIONS)[number];
export const CURRENT_AAD_VERSION: AadVersion = 2;

/** A stored or received AAD version, or `decryption_failed` for one this build does not know (absent = 1). */
export function aadVersionOf(value: number | undefined): AadVersion {
  if (value === undefined || value === 0) return 1;
  if ((AAD_VERSIONS as readonly number[]).includes(value)) return value as AadVersion;
  throw new AppError('decryption_failed', `A sealed value names AAD version ${value}, which this build does not know; upgrade.`);
}

/**
 * AAD for a stored value. A ciphertext moved to another item, version, key or
 * (v2) environment layer or kind fails its tag check because this string differs.
 */
export function valueAad(id: ValueIdentity, aadVersion: AadVersion): Buffer {
  const base = `${id.namespace}/${id.name}@${id.version}`;
  const key = `${id.keyId}#${id.keyVersion}`;
  if (aadVersion === 1) return Buffer.from(`config-sidecar/value/v1|${base}|${key}`, 'utf8');
  return Buffer.from(`config-sidecar/value/v2|${base}|env=${id.env}|kind=${id.kind}|live|${key}`, 'utf8');
}

/** Overwrites a buffer with zeros; call on every secret buffer that is dropped. */
export function zeroize(...buffers: Array<Buffer | Uint8Array | undefined | null>): void {
  for (const buffer of buffers) buffer?.fill(0);
}

export function newDek(): Buffer {
  return randomBytes(DEK_BYTES);
}

export function seal(key: Buffer, plaintext: Buffer, aad: Buffer): Sealed {
  if (key.length !== DEK_BYTES) throw new AppError('internal', 'A data key must be 32 bytes.');
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(CIPHER, key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { iv, ciphertext, tag: cipher.getAuthTag() };
}

/**
 * Opens a sealed value. A wrong key, AAD or tampered byte throws
 * `decryption_failed`; the caller must never cache or serve anything then.
 */
export function open(key: Buffer, sealed: Sealed, aad: Buffer): Buffer {
  if (sealed.iv.length !== IV_BYTES || sealed.tag.length !== TAG_BYTES) {
    throw new AppError('decryption_failed', 'A sealed value has a malformed IV or tag.');
  }
  try {
    const decipher = createDecipheriv(CIPHER, key, sealed.iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.tag);
    // update() hands out unauthenticated plaintext before final() checks the tag: wipe it on any failure.
    const head = decipher.update(sealed.ciphertext);
    let tail: Buffer;
    try {
      tail = decipher.final();
    } catch (err) {
      zeroize(head);
      throw err;
    }
    if (tail.length === 0) return head;
    const out = Buffer.concat([head, tail]);
    zeroize(head, tail);
    return out;
  } catch (err) {
    throw new AppError('decryption_failed', 'A sealed value failed authentication (GCM tag mismatch).', { cause: err });
  }
}

export function sealedToWire(sealed: Sealed): SealedWire {
  return {
    iv: sealed.iv.toString('base64'),
    ciphertext: sealed.ciphertext.toString('base64'),
    tag: sealed.tag.toString('base64'),
  };
}

export function sealedFromWire(wire: SealedWire): Sealed {
  return {
    iv: Buffer.from(wire.iv, 'base64'),
    ciphertext: Buffer.from(wire.ciphertext, 'base64'),
    tag: Buffer.from(wire.tag, 'base64'),
  };
}

// ---------------------------------------------------------------------------
// DEK transport: X25519 ECDH + HKDF-SHA256 + AES-256-GCM.

/** An X25519 key pair; the agent makes one at start and never writes it down. */
export interface TransportKeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** The raw 32-byte public key, base64. */
  readonly publicKeyBase64: string;
}

export function generateTransportKeyPair(): TransportKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return { privateKey, publicKey, publicKeyBase64: rawPublicKey(publicKey).toString('base64') };
}

function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new AppError('internal', 'Not an X25519 public key.');
  return Buffer.from(jwk.x, 'base64url');
}

/** Parses a raw base64 X25519 public key; throws `invalid_argument` when malformed. */
export function parseTransportPublicKey(base64: string): KeyObject {
  const raw = Buffer.from(base64, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== base64.trim()) {
    throw new AppError('invalid_argument', 'publicKey must be a base64-encoded 32-byte X25519 public key.');
  }
  try {
    return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw.toString('base64url') }, format: 'jwk' });
  } catch (err) {
    throw new AppError('invalid_argument', 'publicKey is not a valid X25519 public key.', { cause: err });
  }
}

/** What a wrapped DEK is bound to: both public keys, the namespace and the DEK version. */
export interface DekBinding {
  readonly namespace: string;
  readonly keyVersion: number;
  /** The recipient's (agent's) raw public key, base64. */
  readonly recipientPublicKey: string;
  /** The server's ephemeral raw public key, base64. */
  readonly senderPublicKey: string;
}

function dekInfo(binding: DekBinding): Buffer {
  return Buffer.from(
    `config-sidecar/dek-wrap/v1|${binding.namespace}|${binding.keyVersion}|${binding.recipientPublicKey}|${binding.senderPublicKey}`,
    'utf8',
  );
}

/** The shared secret stays the caller's: one agreement serves every DEK of a response. */
function deriveWrapKey(shared: Buffer, binding: DekBinding): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.alloc(0), dekInfo(binding), DEK_BYTES));
}

/** A server ephemeral key for one response: every DEK in the response is wrapped with it. */
export function generateEphemeralKeyPair(): TransportKeyPair {
  return generateTransportKeyPair();
}

/** The binding of one DEK within a response: which namespace and version it is. */
export type DekVersionBinding = Omit<DekBinding, 'senderPublicKey' | 'recipientPublicKey'>;

/**
 * Server side: wraps each DEK of one response for the recipient with the
 * response's ephemeral key. The X25519 agreement is made once per response
 * (it is the same for every DEK in it) and each DEK's wrap key is still
 * derived from its own binding (the wire format is unchanged); `done()`
 * zero-fills the agreement, so a response costs one agreement rather
 * than one per key version (a namespace rotated 50 times answered in 10 ms).
 */
export function dekWrapper(recipient: KeyObject, ephemeral: TransportKeyPair): { wrap(dek: Buffer, binding: DekVersionBinding): SealedWire; done(): void } {
  const recipientPublicKey = rawPublicKey(recipient).toString('base64');
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient });
  return {
    wrap(dek, binding) {
      const full: DekBinding = { ...binding, recipientPublicKey, senderPublicKey: ephemeral.publicKeyBase64 };
      const wrapKey = deriveWrapKey(shared, full);
      try {
        return sealedToWire(seal(wrapKey, dek, dekInfo(full)));
      } finally {
        zeroize(wrapKey);
      }
    },
    done: () => zeroize(shared),
  };
}

/** Server side: wraps one DEK for the recipient with the response's ephemeral key. */
export function wrapDek(dek: Buffer, recipient: KeyObject, ephemeral: TransportKeyPair, binding: DekVersionBinding): SealedWire {
  const wrapper = dekWrapper(recipient, ephemeral);
  try {
    return wrapper.wrap(dek, binding);
  } finally {
    wrapper.done();
  }
}

/**
 * Agent side: unwraps the DEKs of one response (one sender key), with one
 * X25519 agreement for all of them. Presented with another namespace or
 * version than a key was wrapped for, the derived key and AAD differ and the
 * call throws `decryption_failed`. `done()` zero-fills the agreement.
 */
export function dekUnwrapper(own: TransportKeyPair, senderPublicKey: string): { unwrap(wrapped: SealedWire, binding: DekVersionBinding): Buffer; done(): void } {
  const shared = diffieHellman({ privateKey: own.privateKey, publicKey: parseTransportPublicKey(senderPublicKey) });
  return {
    unwrap(wrapped, binding) {
      const full: DekBinding = { ...binding, recipientPublicKey: own.publicKeyBase64, senderPublicKey };
      const wrapKey = deriveWrapKey(shared, full);
      try {
        return open(wrapKey, sealedFromWire(wrapped), dekInfo(full));
      } finally {
        zeroize(wrapKey);
      }
    },
    done: () => zeroize(shared),
  };
}

/** Agent side: unwraps one DEK (`dekUnwrapper` for a single key). */
export function unwrapDek(wrapped: SealedWire, own: TransportKeyPair, binding: Omit<DekBinding, 'recipientPublicKey'>): Buffer {
  const unwrapper = dekUnwrapper(own, binding.senderPublicKey);
  try {
    return unwrapper.unwrap(wrapped, { namespace: binding.namespace, keyVersion: binding.keyVersion });
  } finally {
    unwrapper.done();
  }
}
