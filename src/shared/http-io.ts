/**
 * The small HTTP plumbing every listener shares: bounded body reading, JSON
 * answers, and the one place an error becomes a response.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AppError, errorBody, toAppError } from './errors.ts';
import { parseUntrustedJson } from './json-guard.ts';
import type { Bytes } from './units.ts';

export const DEFAULT_MAX_BODY_BYTES: Bytes = 1024 * 1024;

/** Reads the whole body, refusing more than `limit` bytes with 413 (without buffering the excess). */
export async function readBody(req: IncomingMessage, limit: Bytes = DEFAULT_MAX_BODY_BYTES): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    throw new AppError('payload_too_large', `The request body is ${declared} bytes; the limit is ${limit}.`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      for (const c of chunks) c.fill(0);
      req.resume();
      throw new AppError('payload_too_large', `The request body is over the ${limit}-byte limit.`);
    }
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks, size);
  for (const c of chunks) c.fill(0);
  return body;
}

/** Reads and parses a JSON body; malformed, too deeply nested or `__proto__`-keyed JSON is `invalid_json`. */
export async function readJson(req: IncomingMessage, limit?: Bytes): Promise<unknown> {
  const body = await readBody(req, limit);
  if (body.length === 0) throw new AppError('invalid_json', 'The request body is empty; send a JSON object.');
  try {
    return parseUntrustedJson(body);
  } finally {
    body.fill(0);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | number> = {}): void {
  const payload = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': payload.length, ...headers });
  res.end(payload);
}

/** Writes any thrown value as `{ error: { code, message } }` with its status. */
export function sendError(res: ServerResponse, err: unknown): AppError {
  const appError = toAppError(err);
  if (res.headersSent) {
    res.destroy();
    return appError;
  }
  sendJson(res, appError.httpStatus, errorBody(appError), { ...appError.headers });
  return appError;
}
