/**
 * Key-encryption-key providers: they wrap and unwrap the namespaces' DEKs, and
 * the control plane never stores a DEK any other way. The local provider keeps
 * a 256-bit KEK in memory (read from a key file or CONFIG_SIDECAR_KEK) and wraps
 * with AES-256-GCM; a Vault Transit or cloud KMS provider implements the same
 * `KekProvider` with a network call (the optional `context` maps to Transit's
 * derivation context or KMS's encryption context).
 */
import { createHash } from 'node:crypto';
import { DEK_BYTES, IV_BYTES, TAG_BYTES, open, seal, zeroize } from '../shared/crypto.ts';
import { AppError } from '../shared/errors.ts';
import { readSecretSetting, SettingError } from '../shared/settings.ts';
import type { KekProvider } from './control-plane.ts';

export const KEK_BYTES = 32;
export const KEK_FILE_FLAG = '--kek-file';
export const KEK_ENV_VAR = 'CONFIG_SIDECAR_KEK';
/** What a user who has no KEK yet needs to read: what it is, how to make one, and to keep it. */
export const KEK_MISSING_HINT =
  'is required: the key-encryption key (KEK) wraps every data key of the store. ' +
  'Make one with `openssl rand -base64 32 > kek.b64` (mode 0600) and pass --kek-file kek.b64, or `export CONFIG_SIDECAR_KEK=$(openssl rand -base64 32)`; ' +
  'keep it with your backups: without it the store cannot be read';
/** Hex characters of SHA-256(KEK) used as its id: enough to tell keys apart, useless to recover one. */
const KEK_ID_HEX_CHARS = 16;
/** First byte of a wrapped DEK, so the format can change without guessing. */
const WRAP_FORMAT_V1 = 1;

function wrapAad(kekId: string, context: string | undefined): Buffer {
  return Buffer.from(`config-sidecar/kek-wrap/v1|${kekId}|${context ?? ''}`, 'utf8');
}

/** A KEK held in process memory, from a file or an environment variable. */
export class LocalKekProvider implements KekProvider {
  readonly id: string;
  readonly #key: Buffer;

  /** Takes ownership of `key` (32 bytes); `destroy()` zero-fills it. */
  constructor(key: Buffer) {
    if (key.length !== KEK_BYTES) throw new AppError('internal', `A KEK must be ${KEK_BYTES} bytes.`);
    this.#key = key;
    this.id = `local:${createHash('sha256').update(key).digest('hex').slice(0, KEK_ID_HEX_CHARS)}`;
  }

  async wrap(dek: Buffer, context?: string): Promise<Buffer> {
    if (dek.length !== DEK_BYTES) throw new AppError('internal', `A DEK must be ${DEK_BYTES} bytes.`);
    const sealed = seal(this.#key, dek, wrapAad(this.id, context));
    return Buffer.concat([Buffer.from([WRAP_FORMAT_V1]), sealed.iv, sealed.tag, sealed.ciphertext]);
  }

  /** Throws `decryption_failed` when the blob was wrapped by another KEK or for another context. */
  async unwrap(wrapped: Buffer, context?: string): Promise<Buffer> {
    if (wrapped.length !== 1 + IV_BYTES + TAG_BYTES + DEK_BYTES || wrapped[0] !== WRAP_FORMAT_V1) {
      throw new AppError('decryption_failed', 'A wrapped data key has an unknown format.');
    }
    const iv = wrapped.subarray(1, 1 + IV_BYTES);
    const tag = wrapped.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    const ciphertext = wrapped.subarray(1 + IV_BYTES + TAG_BYTES);
    return open(this.#key, { iv, tag, ciphertext }, wrapAad(this.id, context));
  }

  destroy(): void {
    zeroize(this.#key);
  }
}

/**
 * Parses base64 of exactly 32 bytes. `setting` names where the text came from,
 * so a bad key stops start-up with a message naming the flag or variable.
 */
export function kekFromBase64(textValue: string, setting: string): LocalKekProvider {
  const trimmed = textValue.trim();
  const key = Buffer.from(trimmed, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed) || key.toString('base64') !== trimmed) {
    zeroize(key);
    throw new SettingError(setting, 'the KEK is not valid base64; generate one with `openssl rand -base64 32`');
  }
  if (key.length !== KEK_BYTES) {
    const length = key.length;
    zeroize(key);
    throw new SettingError(setting, `the KEK decodes to ${length} bytes, it must be exactly ${KEK_BYTES}; generate one with \`openssl rand -base64 32\``);
  }
  return new LocalKekProvider(key);
}

/**
 * The KEK from `--kek-file` (preferred) or `CONFIG_SIDECAR_KEK`; undefined when
 * neither is set (the caller decides whether that is allowed, e.g. `dev`).
 */
export function loadLocalKek(options: { readonly file?: string | undefined; readonly env?: NodeJS.ProcessEnv }): LocalKekProvider | undefined {
  const text = readSecretSetting({ fileFlag: KEK_FILE_FLAG, file: options.file, envVar: KEK_ENV_VAR, env: options.env });
  if (text === undefined) return undefined;
  return kekFromBase64(text, options.file ? `${KEK_FILE_FLAG} (${options.file})` : KEK_ENV_VAR);
}
