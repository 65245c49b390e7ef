/**
 * The webhook's HTTPS listener (`node:https`): `POST /mutate` answers
 * AdmissionReviews, `GET /healthz` and `/readyz` serve the kubelet's probes
 * and `GET /metrics` Prometheus, all on the one TLS port (the API server and
 * the kubelet both speak HTTPS to it). The certificate and key are re-read
 * when their files change, as cert-manager rotates the mounted Secret, and
 * swapped in with `setSecureContext` without dropping connections; a broken
 * pair (half-written, mismatched) is refused and the old one kept.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { createSecureContext } from 'node:tls';
import { watch, type FSWatcher } from 'chokidar';
import { Counter, Registry } from 'prom-client';
import { AppError, describeError } from '../shared/errors.ts';
import { readJson, sendError, sendJson } from '../shared/http-io.ts';
import type { Logger } from '../shared/logger.ts';
import { SettingError, type ListenAddress } from '../shared/settings.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import { answerReview } from './admission.ts';
import type { WebhookSettings } from './settings.ts';

/** Watch events come in bursts (the kubelet swaps a symlink and removes a directory); reload once after them. */
export const CERT_RELOAD_DEBOUNCE_MS: Milliseconds = 200;
/** A backstop for a missed watch event: re-check the files this often. */
export const CERT_RECHECK_INTERVAL_MS: Milliseconds = 60_000;
/** A slow or stuck client cannot hold the API server's call open past its own timeout anyway. */
export const REQUEST_TIMEOUT_MS: Milliseconds = 10_000;
export const HEADERS_TIMEOUT_MS: Milliseconds = 5_000;
export const KEEP_ALIVE_TIMEOUT_MS: Milliseconds = 30_000;
/**
 * An oversized body is read and discarded up to this many bytes before the 413
 * goes out, so the client (still writing) reads the answer instead of a reset;
 * past it the connection is cut.
 */
export const MAX_DRAIN_BYTES: Bytes = 16 * 1024 * 1024;

interface KeyPair {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly digest: string;
  readonly fingerprint: string;
  readonly validTo: string;
}

/** Reads and checks a certificate/key pair; throws with the reason. */
function loadKeyPair(certPath: string, keyPath: string): KeyPair {
  const cert = readFileSync(certPath);
  const key = readFileSync(keyPath);
  createSecureContext({ cert, key }); // throws on a malformed or mismatched pair
  const x509 = new X509Certificate(cert);
  const digest = createHash('sha256').update(cert).update(key).digest('hex');
  return { cert, key, digest, fingerprint: x509.fingerprint256, validTo: x509.validTo };
}

/** Resolves once the request body has been read to its end (discarded), or cuts the connection past `limit`. */
function drain(req: IncomingMessage, limit: Bytes): Promise<void> {
  return new Promise((resolve) => {
    if (req.readableEnded || req.destroyed) return resolve();
    let seen = 0;
    const done = () => {
      req.off('data', onData);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > limit) {
        req.socket.destroy();
        done();
      }
    };
    req.on('data', onData);
    req.once('end', done);
    req.once('close', done);
    req.resume();
  });
}

export interface RunningWebhook {
  readonly address: ListenAddress;
  /** The SHA-256 fingerprint of the certificate being served. */
  fingerprint(): string;
  close(): Promise<void>;
}

export async function startWebhook(settings: WebhookSettings, logger: Logger): Promise<RunningWebhook> {
  let pair: KeyPair;
  try {
    pair = loadKeyPair(settings.tlsCert, settings.tlsKey);
  } catch (err) {
    throw new SettingError('--tls-cert/--tls-key (CONFIG_SIDECAR_TLS_CERT/KEY)', `cannot load the TLS pair: ${describeError(err)}`);
  }

  const registry = new Registry();
  const admissions = new Counter({
    name: 'config_sidecar_webhook_admissions_total',
    help: 'AdmissionReviews answered, by outcome (patched, skipped, unchanged, denied, bad_request).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const reloads = new Counter({
    name: 'config_sidecar_webhook_tls_reloads_total',
    help: 'TLS certificate reloads, by result.',
    labelNames: ['result'] as const,
    registers: [registry],
  });

  const server: Server = createServer(
    {
      cert: pair.cert,
      key: pair.key,
      minVersion: 'TLSv1.2',
      requestTimeout: REQUEST_TIMEOUT_MS,
      headersTimeout: HEADERS_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    },
    (req, res) => {
      void handle(req, res).catch((err: unknown) => {
        const appError = sendError(res, err);
        if (appError.code === 'internal') logger.error({ err: describeError(err) }, 'request failed');
      });
    },
  );
  server.on('tlsClientError', (err) => logger.debug({ err: describeError(err) }, 'TLS handshake failed'));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/readyz') {
      sendJson(res, 200, { status: path === '/healthz' ? 'ok' : 'ready' });
      return;
    }
    if (path === '/metrics') {
      const body = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(body);
      return;
    }
    if (path !== '/mutate') throw new AppError('not_found', `No route ${path}; the webhook serves POST /mutate, /healthz, /readyz and /metrics.`);
    if (req.method !== 'POST') throw new AppError('method_not_allowed', 'POST an AdmissionReview to /mutate.');
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) {
      req.resume();
      throw new AppError('unsupported_media_type', `Send application/json, got "${type}".`);
    }
    let answer;
    try {
      answer = answerReview(await readJson(req, settings.maxBodyBytes), settings.injector);
    } catch (err) {
      admissions.inc({ outcome: 'bad_request' });
      logger.warn({ err: describeError(err) }, 'refused a request that is not an AdmissionReview v1');
      if (err instanceof AppError && err.code === 'payload_too_large') await drain(req, MAX_DRAIN_BYTES);
      throw err;
    }
    admissions.inc({ outcome: answer.log.outcome });
    const level = answer.log.outcome === 'denied' ? 'warn' : 'info';
    logger[level](answer.log, 'admission review answered');
    sendJson(res, 200, answer.review);
  }

  // Certificate rotation.
  let reloadTimer: NodeJS.Timeout | undefined;
  const reload = (why: string) => {
    let next: KeyPair;
    try {
      next = loadKeyPair(settings.tlsCert, settings.tlsKey);
    } catch (err) {
      reloads.inc({ result: 'failed' });
      logger.warn({ why, err: describeError(err) }, 'TLS pair not reloaded; still serving the previous certificate');
      return;
    }
    if (next.digest === pair.digest) return;
    server.setSecureContext({ cert: next.cert, key: next.key });
    pair = next;
    reloads.inc({ result: 'ok' });
    logger.info({ why, fingerprint: pair.fingerprint, validTo: pair.validTo }, 'tls certificate reloaded');
  };
  const schedule = (why: string) => {
    if (reloadTimer) clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => reload(why), CERT_RELOAD_DEBOUNCE_MS);
    reloadTimer.unref();
  };
  const dirs = [...new Set([dirname(settings.tlsCert), dirname(settings.tlsKey)])];
  const watcher: FSWatcher = watch(dirs, { ignoreInitial: true, depth: 1 });
  watcher.on('all', () => schedule('files changed'));
  watcher.on('error', (err) => logger.warn({ err: describeError(err) }, 'certificate watcher error; relying on the periodic re-check'));
  const recheck = setInterval(() => reload('periodic check'), CERT_RECHECK_INTERVAL_MS);
  recheck.unref();
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(settings.listen.port, settings.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address();
  const address = { host: settings.listen.host, port: typeof bound === 'object' && bound ? bound.port : settings.listen.port };
  server.on('error', (err) => logger.error({ err: describeError(err) }, 'listener error'));
  logger.info({ host: address.host, port: address.port, fingerprint: pair.fingerprint, validTo: pair.validTo }, 'webhook listening');

  let closing: Promise<void> | undefined;
  return {
    address,
    fingerprint: () => pair.fingerprint,
    close() {
      closing ??= (async () => {
        clearInterval(recheck);
        if (reloadTimer) clearTimeout(reloadTimer);
        await watcher.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
      })();
      return closing;
    },
  };
}
