/**
 * The REST listener: HTTP/1.1 (TLS when configured). Thin: it times the
 * request, opens a span with the caller's trace context, calls `handleRest`,
 * writes the result, and turns any error into a response via `sendError`.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { AppError, errorBody, toAppError } from '../../shared/errors.ts';
import { CONNECTIONS_CHECK_MS, limitConnections } from '../../shared/connection-limit.ts';
import { createServer as createHttpServer, STATUS_CODES } from '../../shared/node-http.ts';
import { createServer as createHttpsServer } from 'node:https';
import { context, propagation, SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api';
import { sendError, sendJson } from '../../shared/http-io.ts';
import { zeroize } from '../../shared/crypto.ts';
import type { Logger } from '../../shared/logger.ts';
import type { ServerMetrics } from '../metrics.ts';
import { handleRest, type RequestContext, type RestDeps } from './rest-handler.ts';
import { ROUTE_TEMPLATE } from './routes.ts';

/** Request headers above this are refused by Node with 431 before we see them. */
const MAX_HEADER_BYTES = 16 * 1024;
/** A client that has not sent its headers by then is dropped (also an idle new connection). */
const HEADERS_TIMEOUT_MS = 10_000;
/** A TLS client that has not finished its handshake by then is dropped. */
const TLS_HANDSHAKE_TIMEOUT_MS = 5_000;

/**
 * API answers (JSON, some holding secret values) are never stored by a cache
 * or browser, never sniffed into another type, and render nothing if opened
 * in a browser tab.
 */
const API_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
};

export interface RestServerOptions {
  readonly deps: RestDeps;
  readonly metrics: ServerMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer } | undefined;
  /** True once shutdown began: answers carry `Connection: close` so keep-alive sockets do not hold it up. */
  readonly draining: () => boolean;
  /** Connections held at most (shared/connection-limit.ts). */
  readonly maxConnections: number;
}

export function createRestServer(options: RestServerOptions): Server {
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    void serve(options, req, res);
  };
  // Node enforces headersTimeout every 30 s by default, which lets idle connections pile up.
  const common = { maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: CONNECTIONS_CHECK_MS };
  const server = options.tls
    ? createHttpsServer({ ...common, cert: options.tls.cert, key: options.tls.key, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS }, listener)
    : createHttpServer(common, listener);
  limitConnections(server, {
    max: options.maxConnections,
    event: options.tls ? 'secureConnection' : 'connection',
    onShed: (reason) => options.metrics.connectionsShed.inc({ reason }),
  });
  // Requests Node refuses before our handler (oversized headers, bad framing) still get the JSON error shape.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    const error = new AppError(err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : 'bad_request');
    const body = JSON.stringify(errorBody(error));
    options.metrics.requests.inc({ route: 'unparsed', method: 'unknown', status: String(error.httpStatus) });
    socket.end(`HTTP/1.1 ${error.httpStatus} ${STATUS_CODES[error.httpStatus] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  return server;
}

async function serve(options: RestServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { metrics, logger, tracer } = options;
  const started = process.hrtime.bigint();
  const ctx: RequestContext = {};
  const parent = propagation.extract(context.active(), req.headers);
  await tracer.startActiveSpan(`${req.method} rest`, { kind: SpanKind.SERVER }, parent, async (span) => {
    let status = 500;
    // Defaults for every answer, errors included; the status page replaces them with its own.
    for (const [name, value] of Object.entries(API_HEADERS)) res.setHeader(name, value);
    try {
      const result = await handleRest(req, options.deps, ctx);
      if (options.draining()) res.setHeader('connection', 'close');
      status = result.status;
      if (result.raw) {
        res.writeHead(result.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': result.raw.length, ...result.headers });
        // The socket holds a reference until flushed; wipe only after that.
        res.end(result.raw, () => {
          if (result.sensitive) zeroize(result.raw);
        });
      } else if (result.body === undefined) {
        res.writeHead(result.status, { ...result.headers });
        res.end();
      } else {
        sendJson(res, result.status, result.body, { ...result.headers });
      }
    } catch (err) {
      const refused = toAppError(err);
      // An unauthenticated caller never keeps a connection: it cannot hold a slot past its answer.
      if ((options.draining() || refused.httpStatus === 401) && !res.headersSent) res.setHeader('connection', 'close');
      const appError = sendError(res, refused);
      status = appError.httpStatus;
      span.setStatus({ code: SpanStatusCode.ERROR, message: appError.code });
      const fields = { code: appError.code, status, route: ctx.route?.op, subject: ctx.subject, method: req.method };
      if (status >= 500) {
        metrics.storeErrors.inc({ code: appError.code });
        logger.error({ ...fields, err: appError.message, cause: (appError.cause as Error | undefined)?.message }, 'request failed');
      } else {
        logger.info(fields, 'request refused');
      }
    } finally {
      const route = ctx.route ? ROUTE_TEMPLATE[ctx.route.op] : 'unmatched';
      span.setAttribute('http.route', route);
      span.setAttribute('http.response.status_code', status);
      span.end();
      metrics.requests.inc({ route, method: req.method ?? 'GET', status: String(status) });
      metrics.requestDuration.observe({ route, method: req.method ?? 'GET' }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  });
}
