/**
 * The admin listener shared by server and agent: `/healthz` (alive),
 * `/readyz` (component-defined) and `/metrics` (Prometheus). It carries no
 * data, so it may bind to all interfaces for kubelet probes and scraping.
 */
import type { Server as NetServer } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from './node-http.ts';
import { sendError, sendJson } from './http-io.ts';
import { AppError } from './errors.ts';
import type { ListenAddress } from './settings.ts';

export interface Readiness {
  readonly ready: boolean;
  /** Per-check detail shown in the /readyz body. */
  readonly checks: Readonly<Record<string, { ok: boolean; detail?: string }>>;
}

/** What /metrics serves: prom-client's Registry (server, webhook) or shared/metrics' MetricsRegistry (agent). */
export interface MetricsSource {
  /** The exposition text, collected now. */
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface AdminServerOptions {
  readonly registry: MetricsSource;
  readonly readiness: () => Readiness;
  /** Extra routes (e.g. test hooks); return true when handled. */
  readonly extraRoutes?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean> | boolean;
}

export function createAdminServer(options: AdminServerOptions): Server {
  return createServer((req, res) => {
    void handle(options, req, res).catch((err: unknown) => sendError(res, err));
  });
}

async function handle(options: AdminServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (options.extraRoutes && (await options.extraRoutes(req, res))) return;
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new AppError('method_not_allowed');
  switch (path) {
    case '/healthz':
      sendJson(res, 200, { status: 'ok' });
      return;
    case '/readyz': {
      const readiness = options.readiness();
      sendJson(res, readiness.ready ? 200 : 503, { status: readiness.ready ? 'ready' : 'not-ready', checks: readiness.checks });
      return;
    }
    case '/metrics': {
      const body = await options.registry.metrics();
      res.writeHead(200, { 'content-type': options.registry.contentType });
      res.end(body);
      return;
    }
    default:
      throw new AppError('not_found', `No admin route ${path}; try /healthz, /readyz or /metrics.`);
  }
}

/** Listens and resolves with the bound address (port 0 picks a free port). */
export function listen(server: NetServer, address: ListenAddress): Promise<ListenAddress> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      const bound = server.address();
      resolve(typeof bound === 'object' && bound ? { host: address.host, port: bound.port } : address);
    });
  });
}
