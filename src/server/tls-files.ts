/**
 * TLS material for the REST and gRPC listeners, re-read when the files change
 * (cert-manager rotates them in place). REST swaps its secure context; gRPC
 * uses grpc-js's file-watching certificate provider.
 */
import { readFileSync } from 'node:fs';
import type { Server as HttpsServer } from 'node:https';
import * as grpc from '@grpc/grpc-js';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../shared/logger.ts';
import { SettingError } from '../shared/settings.ts';

/** How often grpc-js re-reads the certificate files. */
const GRPC_CERT_REFRESH_MS = 60_000;

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
}

export function readTls(files: TlsFiles): { cert: Buffer; key: Buffer } {
  const read = (path: string, flag: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new SettingError(flag, `cannot read "${path}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  };
  return { cert: read(files.cert, '--tls-cert (CONFIG_SIDECAR_TLS_CERT)'), key: read(files.key, '--tls-key (CONFIG_SIDECAR_TLS_KEY)') };
}

/** Reloads the HTTPS server's certificate when either file changes. Returns a closer. */
export function watchRestTls(server: HttpsServer, files: TlsFiles, logger: Logger): () => Promise<void> {
  const watcher: FSWatcher = watch([files.cert, files.key], { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 20 } });
  watcher.on('all', () => {
    try {
      server.setSecureContext(readTls(files));
      logger.info({ cert: files.cert }, 'TLS certificate reloaded');
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'TLS reload failed; keeping the previous certificate');
    }
  });
  return () => watcher.close();
}

export function grpcCredentials(files: TlsFiles | undefined): grpc.ServerCredentials {
  if (!files) return grpc.ServerCredentials.createInsecure();
  readTls(files); // fail start-up early, naming the setting
  const provider = new grpc.experimental.FileWatcherCertificateProvider({
    certificateFile: files.cert,
    privateKeyFile: files.key,
    refreshIntervalMs: GRPC_CERT_REFRESH_MS,
  });
  // grpc-js's exported function passes its first argument on as the identity provider.
  return grpc.experimental.createCertificateProviderServerCredentials(provider, null, false);
}
