/**
 * One error type with stable codes, mapped to HTTP and gRPC status in one table
 * (STYLE.md §4). Every component throws `AppError`; listeners turn it into a
 * response in exactly one place (`errorBody`, `httpStatusOf`, `grpcStatusOf`).
 */

/** gRPC status codes we use (numeric values from the gRPC spec). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

/** Every stable error code, with its HTTP and gRPC mapping and a default message. */
export const ERROR_CODES = {
  bad_request: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, message: 'The request is malformed.' },
  invalid_json: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, message: 'The request body is not valid JSON.' },
  invalid_path: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, message: 'The item path is invalid.' },
  invalid_argument: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, message: 'An argument is invalid.' },
  unauthenticated: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED, message: 'A valid bearer token is required.' },
  permission_denied: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, message: 'The caller may not perform this action.' },
  forwarded_request: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED, message: 'Forwarded requests are refused.' },
  not_found: { http: 404, grpc: GrpcStatus.NOT_FOUND, message: 'Not found.' },
  method_not_allowed: { http: 405, grpc: GrpcStatus.UNIMPLEMENTED, message: 'Method not allowed.' },
  conflict: { http: 409, grpc: GrpcStatus.ALREADY_EXISTS, message: 'Conflict.' },
  payload_too_large: { http: 413, grpc: GrpcStatus.RESOURCE_EXHAUSTED, message: 'The request body is too large.' },
  unsupported_media_type: { http: 415, grpc: GrpcStatus.INVALID_ARGUMENT, message: 'Unsupported content type.' },
  rate_limited: { http: 429, grpc: GrpcStatus.RESOURCE_EXHAUSTED, message: 'Too many requests.' },
  headers_too_large: { http: 431, grpc: GrpcStatus.RESOURCE_EXHAUSTED, message: 'Request headers are too large.' },
  decryption_failed: { http: 500, grpc: GrpcStatus.DATA_LOSS, message: 'Stored data failed authentication.' },
  internal: { http: 500, grpc: GrpcStatus.INTERNAL, message: 'Internal error.' },
  upstream_error: { http: 502, grpc: GrpcStatus.UNAVAILABLE, message: 'The upstream server answered with an error.' },
  unavailable: { http: 503, grpc: GrpcStatus.UNAVAILABLE, message: 'The service is unavailable.' },
  stale_expired: { http: 503, grpc: GrpcStatus.UNAVAILABLE, message: 'The server is unreachable and the cached value is older than max-stale.' },
  store_unavailable: { http: 503, grpc: GrpcStatus.UNAVAILABLE, message: 'The store is unavailable.' },
  upstream_timeout: { http: 504, grpc: GrpcStatus.DEADLINE_EXCEEDED, message: 'The upstream server did not answer in time.' },
  resource_exhausted: { http: 503, grpc: GrpcStatus.RESOURCE_EXHAUSTED, message: 'A resource limit was reached.' },
  resync_required: { http: 410, grpc: GrpcStatus.OUT_OF_RANGE, message: 'The requested revision is no longer retained.' },
} as const satisfies Record<string, { http: number; grpc: GrpcStatusCode; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** JSON error body every listener answers with. */
export interface ErrorBody {
  error: { code: ErrorCode | string; message: string };
}

export class AppError extends Error {
  override readonly name = 'AppError';
  readonly code: ErrorCode;
  /** Extra response headers, e.g. `Retry-After` for 429. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown; headers?: Record<string, string> }) {
    super(message ?? ERROR_CODES[code].message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.headers = options?.headers ?? {};
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  get grpcStatus(): GrpcStatusCode {
    return ERROR_CODES[this.code].grpc;
  }
}

/** Caught values are `unknown`; read them through this one helper. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  return new AppError('internal', undefined, { cause: err });
}

export function errorBody(err: AppError): ErrorBody {
  return { error: { code: err.code, message: err.message } };
}

/** A message safe to log for any thrown value (never includes request data). */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

/**
 * What a client of the control plane (the agent) does with each code the
 * server answers with, read from the body's `error.code`: `retry` (transient:
 * retry with backoff, and stale-if-error may serve the last good value),
 * `drop` (the data is gone or no longer ours: stop serving it), anything else
 * fails the call as is.
 */
export const CLIENT_ACTION: Readonly<Partial<Record<ErrorCode, 'retry' | 'drop'>>> = {
  unavailable: 'retry',
  store_unavailable: 'retry',
  stale_expired: 'retry',
  upstream_error: 'retry',
  upstream_timeout: 'retry',
  internal: 'retry',
  rate_limited: 'retry',
  resource_exhausted: 'retry',
  not_found: 'drop',
  permission_denied: 'drop',
  unauthenticated: 'drop',
  decryption_failed: 'drop',
};

export function clientActionOf(code: string): 'retry' | 'drop' | 'fail' {
  return (isErrorCode(code) ? CLIENT_ACTION[code] : undefined) ?? 'fail';
}
