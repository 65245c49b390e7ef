/**
 * The one error a format throws; the agent's ring responses map it to HTTP
 * without loading the file formats.
 */
export type RenderFailure = 'missing_item' | 'missing_key' | 'unrepresentable' | 'not_pem' | 'binary' | 'template';

/** A file that cannot be rendered; the message names the key or item and never includes a value. */
export class FileRenderError extends Error {
  override readonly name = 'FileRenderError';
  readonly reason: RenderFailure;
  constructor(reason: RenderFailure, message: string) {
    super(message);
    this.reason = reason;
  }
}
