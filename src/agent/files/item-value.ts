/**
 * The value a file or ring format renders, kept apart from the formats so the
 * read path can name it without loading them (and `yaml` with them).
 */
/** A decrypted value as the agent's cache holds it. */
export interface ItemValue {
  readonly kind: 'config' | 'secret';
  /** Config: the merged value as JSON text. Secret: the raw bytes. */
  readonly value: Buffer;
  readonly version: number;
  /** Formats that read key rings (jwks, pem-bundle): the previous versions within their grace, newest first. */
  readonly previous?: readonly ItemValue[] | undefined;
}
